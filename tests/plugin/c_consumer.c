/* A C program against include/swapalloc/swapalloc.h and libswapalloc.so (test
 * PluginAbi.CConsumer): the header is valid C (C11, -Wall -Wextra -pedantic), and the library
 * answers a C caller: its version, the defaults of the pool options, the not-initialized
 * status with a message. Exit status 0 when all of that holds. */
#include <swapalloc/swapalloc.h>

#include <stdio.h>
#include <string.h>

int main(void)
{
  swapalloc_pool_options options;
  swapalloc_pool_id pool = 0;
  if (swapalloc_abi_version() != SWAPALLOC_ABI_VERSION) {
    fprintf(stderr, "abi version %d, header %d\n", swapalloc_abi_version(), SWAPALLOC_ABI_VERSION);
    return 1;
  }
  swapalloc_pool_options_init(&options);
  if (options.priority != SWAPALLOC_PRIORITY_NORMAL || options.evictable != 1) {
    fprintf(stderr, "pool option defaults: priority %d, evictable %d\n", options.priority,
            options.evictable);
    return 1;
  }
  if (swapalloc_pool_create("c", &options, &pool) != SWAPALLOC_ERROR_NOT_INITIALIZED ||
      strstr(swapalloc_last_error(), "swapalloc_init()") == NULL) {
    fprintf(stderr, "before init: '%s'\n", swapalloc_last_error());
    return 1;
  }
  puts("c consumer: ok");
  return 0;
}
