# Compile options shared by every target the project builds.

# swapalloc_strict_warnings(<target>): our own code builds warning-free.
function(swapalloc_strict_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Werror)
endfunction()

# Sanitizers apply to every target, so the simulator and the tests are instrumented alike.
if(SWAPALLOC_SANITIZE)
  if(NOT SWAPALLOC_SANITIZE MATCHES "^(address,undefined|address|undefined|thread)$")
    message(FATAL_ERROR "SWAPALLOC_SANITIZE='${SWAPALLOC_SANITIZE}': accepted values are "
                        "'address,undefined', 'address', 'undefined' or 'thread'")
  endif()
  add_compile_options(-fsanitize=${SWAPALLOC_SANITIZE} -fno-omit-frame-pointer -fno-sanitize-recover=all)
  add_link_options(-fsanitize=${SWAPALLOC_SANITIZE})
endif()
