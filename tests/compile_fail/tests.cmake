# Compile-failure tests of mproc::codec: each file must fail to compile with the sentence that
# tells the user what to do (mproc_compile_fail_test is defined in tests/CMakeLists.txt).
mproc_compile_fail_test(Codec.raw_pointer raw_pointer.cpp
    "raw pointers cannot cross a process boundary; send the pointee")
mproc_compile_fail_test(Codec.pointer_in_tuple pointer_in_tuple.cpp
    "raw pointers cannot cross a process boundary; send the pointee")
mproc_compile_fail_test(Codec.unique_ptr unique_ptr.cpp
    "smart pointers cannot cross a process boundary; send the pointee")
mproc_compile_fail_test(Codec.string_member_struct string_member_struct.cpp
    "no encoding for this type; give it a member serialize\\(Ar&\\) or specialize mproc::codec<T>")
mproc_compile_fail_test(Codec.function function.cpp
    "std::function cannot cross a process boundary")
mproc_compile_fail_test(Codec.string_view string_view.cpp
    "non-owning views .* cannot cross a process boundary")
mproc_compile_fail_test(Queue.raw_pointer queue_raw_pointer.cpp
    "raw pointers cannot cross a process boundary; send the pointee")
