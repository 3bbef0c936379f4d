# Compiles one file and checks the outcome (cmake -P; the variables come from -D):
#   EXPECT=fail     the compiler must exit non-zero AND its output must match REGEX: a file that
#                   compiles, or that fails for another reason (a missing header, a typo in the
#                   test), fails the test.
#   EXPECT=compile  the compiler must exit 0: the control that proves the harness can pass only
#                   when the library is usable at all (a broken include path fails it).
# COMPILER, INCLUDE_DIR and SOURCE name the compiler, mproc's include directory and the file.
foreach(var COMPILER INCLUDE_DIR SOURCE EXPECT)
    if(NOT DEFINED ${var})
        message(FATAL_ERROR "check.cmake: -D${var}=... is missing")
    endif()
endforeach()
execute_process(COMMAND ${COMPILER} -std=c++20 -fsyntax-only -I${INCLUDE_DIR} ${SOURCE}
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
if(EXPECT STREQUAL "compile")
    if(NOT rc STREQUAL "0")
        message(FATAL_ERROR "${SOURCE} must compile, but the compiler said (${rc}):\n${out}")
    endif()
elseif(EXPECT STREQUAL "fail")
    if(rc STREQUAL "0")
        message(FATAL_ERROR "${SOURCE} must not compile, but it did:\n${out}")
    endif()
    if(NOT out MATCHES "${REGEX}")
        message(FATAL_ERROR "${SOURCE} failed to compile, but without the sentence '${REGEX}':\n${out}")
    endif()
    message(STATUS "${SOURCE} failed to compile with the intended sentence")
else()
    message(FATAL_ERROR "check.cmake: EXPECT must be fail or compile, not '${EXPECT}'")
endif()
