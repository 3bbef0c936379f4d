// mproc: Python's multiprocessing for C++20 on Linux. The umbrella header: includes every part.
#pragma once

#include <mproc/codec.hpp>
#include <mproc/error.hpp>
#include <mproc/fork_map.hpp>
#include <mproc/future.hpp>
#include <mproc/interrupt.hpp>
#include <mproc/pipe.hpp>
#include <mproc/pool.hpp>
#include <mproc/process.hpp>
#include <mproc/queue.hpp>
#include <mproc/shared.hpp>
#include <mproc/start_method.hpp>
#include <mproc/sync.hpp>
#include <mproc/version.hpp>
