;; A minimal Proxy-Wasm module; the tests replace @HINT@ with one toolchain hint
;; (a custom section, a producers section, a function name or an import).
(module
  @HINT@
  (memory (export "memory") 1)
  (func (export "proxy_abi_version_0_2_1"))
)
