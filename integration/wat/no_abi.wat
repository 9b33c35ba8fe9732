;; A valid wasm module WITHOUT a proxy_abi_version_* export: Envoy refuses it
;; ("Missing or unknown Proxy-Wasm ABI version"); publish() must refuse it first.
(module
  (memory (export "memory") 1)
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 1024))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (i32.const 0))
)
