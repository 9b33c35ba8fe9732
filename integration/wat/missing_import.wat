;; Passes the wasmtime/ABI-export check but imports a hostcall Envoy does not provide:
;; only `envoy --mode validate` (or Envoy itself) catches this one.
(module
  (import "env" "proxy_does_not_exist" (func $nope (param i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 1024))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (call $nope (i32.const 0)))
)
