;; No proxy_abi_version_* export (Envoy refuses it); AssemblyScript-like ~lib/ string.
(module
  (memory (export "memory") 1)
  (data (i32.const 16) "~lib/rt/itcms.ts")
  (func (export "proxy_on_vm_start") (param $root i32) (param $size i32) (result i32) (i32.const 1))
)
