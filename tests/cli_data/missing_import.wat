;; Imports a hostcall Envoy 1.40 does not provide, with Rust-like producers/name hints.
(module
  (@producers (language "Rust" "") (processed-by "rustc" "1.89.0"))
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_not_in_envoy" (func $nope (param i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "proxy_abi_version_0_2_1"))
  (func $__rust_alloc (export "proxy_on_memory_allocate") (param $n i32) (result i32) (i32.const 1024))
  (func (export "proxy_on_vm_start") (param $root i32) (param $size i32) (result i32)
    (call $nope (i32.const 0)))
)
