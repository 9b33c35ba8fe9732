;; In on_log, logs the value of x-envoy-expected-rq-timeout-ms, a request header Envoy's router
;; adds after the filters ran: Envoy's filter sees it there, the host's cannot (README, parity).
(module
  (import "env" "proxy_get_header_map_value" (func $get (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (global $bump (mut i32) (i32.const 4096))
  (data (i32.const 1024) "x-envoy-expected-rq-timeout-ms")
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "malloc") (param $n i32) (result i32) (local $p i32)
    (local.set $p (global.get $bump)) (global.set $bump (i32.add (global.get $bump) (local.get $n))) (local.get $p))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_log") (param $ctx i32)
    (if (i32.eqz (call $get (i32.const 0) (i32.const 1024) (i32.const 30) (i32.const 256) (i32.const 260)))
      (then (drop (call $log (i32.const 2) (i32.load (i32.const 256)) (i32.load (i32.const 260))))))))
