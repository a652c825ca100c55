# One helper per kind of test (STYLE.md: registered through one CMake helper
# with a timeout).
#
# kasir_unit_test(NAME src.c... [TIMEOUT s])  cmocka unit test, links
#   kasir_common; label "unit".
# kasir_py_test(NAME script.py [TIMEOUT s] [LABELS l...])  integration test
#   run with Debian's /usr/bin/python3 (the Debian python3-* packages live
#   there); it gets KASIR_BUILD_DIR, KASIR_SOURCE_DIR, KASIR_TEST_DATA_DIR
#   and PYTHONPATH=tests/lib.  Label "integration" by default.
#
# Test data lives in the repository (tests/data, KASIR_TEST_DATA_DIR; C
# tests get it compiled in as the same name): no test reads anything
# outside the source tree, and none skips for missing data.
find_library(CMOCKA_LIB cmocka REQUIRED)
set(KASIR_PYTHON /usr/bin/python3)
set(KASIR_TEST_DATA_DIR ${CMAKE_SOURCE_DIR}/tests/data)

function(kasir_unit_test name)
  cmake_parse_arguments(T "" "TIMEOUT" "" ${ARGN})
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 60)
  endif()
  add_executable(${name} ${T_UNPARSED_ARGUMENTS})
  target_link_libraries(${name} PRIVATE kasir_common ${CMOCKA_LIB})
  target_compile_definitions(${name} PRIVATE
    KASIR_TEST_DATA_DIR="${KASIR_TEST_DATA_DIR}")
  set_target_properties(${name} PROPERTIES RUNTIME_OUTPUT_DIRECTORY
    ${CMAKE_BINARY_DIR}/tests)
  add_test(NAME ${name} COMMAND ${name})
  set_tests_properties(${name} PROPERTIES TIMEOUT ${T_TIMEOUT} LABELS unit
    ENVIRONMENT "KASIR_SOURCE_DIR=${CMAKE_SOURCE_DIR};KASIR_TEST_DATA_DIR=${KASIR_TEST_DATA_DIR};KASIR_BUILD_DIR=${CMAKE_BINARY_DIR}")
endfunction()

# ctest -j starts the tests with the highest COST first.  A fresh clone has
# no Testing/Temporary/CTestCostData.txt (ctest's record of earlier runs),
# so without these the long tests start in name order and the one that
# happens to start last (reconciler_not_started: a real 60 s order expiry)
# sets the end of the run.  Seconds, sanitizer tree, 2 loaded cores.
set(KASIR_TEST_COSTS backbone=90 chaos_short=80 chaos_commit=80
  kasirctl_sop_scenarios=75 reconciler_not_started=70 faults_loops=65
  reconciler_kill=50 ops_smoke_rollback=50 hostile_ingest=45
  notifier_reminders=40 order_kill=35 notifier_failures=35 notifier_kill=32
  notifier_receipt=30 shutdown_sigterm=30 ops_sd_notify=30
  notifier_whatsapp_templates=27 kasirctl_sop=28 payment_outage=27
  db_daemon=22 reconciler_5xx=21 kasirctl_evidence_refund=20
  reconciler_confirm=28 kasirctl_drill=40)

function(kasir_py_test name script)
  cmake_parse_arguments(T "" "TIMEOUT" "LABELS" ${ARGN})
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 300)
  endif()
  if(NOT T_LABELS)
    set(T_LABELS integration)
  endif()
  add_test(NAME ${name} COMMAND ${KASIR_PYTHON} ${script} ${T_UNPARSED_ARGUMENTS})
  foreach(c ${KASIR_TEST_COSTS})
    if(c MATCHES "^${name}=([0-9]+)$")
      set_tests_properties(${name} PROPERTIES COST ${CMAKE_MATCH_1})
    endif()
  endforeach()
  set_tests_properties(${name} PROPERTIES TIMEOUT ${T_TIMEOUT}
    LABELS "${T_LABELS}" SKIP_RETURN_CODE 77
    ENVIRONMENT "KASIR_BUILD_DIR=${CMAKE_BINARY_DIR};KASIR_SOURCE_DIR=${CMAKE_SOURCE_DIR};KASIR_TEST_DATA_DIR=${KASIR_TEST_DATA_DIR};PYTHONPATH=${CMAKE_SOURCE_DIR}/tests/lib;PYTHONUNBUFFERED=1")
endfunction()
