/* A C user of the installed libswapalloc.so (tests Consumer.CMake.<type> and
 * Consumer.PkgConfig): it initializes the plugin on the driver SWAPALLOC_CUDA_DRIVER names,
 * allocates in a pool of its own and finds the pool and its bytes in the statistics. Exit
 * status 0 when they are there; 1 otherwise, with the library's message. */
#include <swapalloc/swapalloc.h>

#include <stdio.h>
#include <string.h>

static int fail(const char* what)
{
  fprintf(stderr, "plugin consumer: %s: %s\n", what, swapalloc_last_error());
  return 1;
}

int main(void)
{
  swapalloc_pool_options options;
  swapalloc_pool_id pool = 0;
  const char* stats      = NULL;
  void* block            = NULL;
  if (swapalloc_init() != SWAPALLOC_SUCCESS) { return fail("swapalloc_init"); }
  swapalloc_pool_options_init(&options);
  if (swapalloc_pool_create("consumer_pool", &options, &pool) != SWAPALLOC_SUCCESS) {
    return fail("swapalloc_pool_create");
  }
  if (swapalloc_pool_push(pool) != SWAPALLOC_SUCCESS) { return fail("swapalloc_pool_push"); }
  block = swapalloc_malloc(3 << 20, 0, NULL);
  if (block == NULL) { return fail("swapalloc_malloc"); }
  if (swapalloc_pool_pop() != SWAPALLOC_SUCCESS) { return fail("swapalloc_pool_pop"); }
  if (swapalloc_stats_json(&stats) != SWAPALLOC_SUCCESS) { return fail("swapalloc_stats_json"); }
  if (strstr(stats, "\"consumer_pool\"") == NULL || strstr(stats, "3145728") == NULL) {
    fprintf(stderr, "plugin consumer: the pool or its 3145728 bytes are not in %s\n", stats);
    return 1;
  }
  swapalloc_free(block, 3 << 20, 0, NULL);
  if (swapalloc_shutdown() != SWAPALLOC_SUCCESS) { return fail("swapalloc_shutdown"); }
  puts("plugin consumer: ok");
  return 0;
}
