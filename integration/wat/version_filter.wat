;; Test filter for the Envoy e2e harness (proxy-wasm ABI 0.2.1, hand-written).
;; "@V" is replaced by a 2-character version tag at build time (integration/wat_build.py),
;; so a code swap is visible as x-filter-version and a config swap as x-filter-config.
;; - request without `x-allow`  -> 403 "denied by @V", header x-filter-version: @V
;; - otherwise adds request header x-filter-version: @V (the echo upstream shows it)
;; - every response gets x-filter-version: @V and x-filter-config: <plugin configuration>
;; - plugin configuration starting with "reject" makes proxy_on_configure return false
(module
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_value" (func $get_hv (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_add_header_map_value" (func $add_hv (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_send_local_response" (func $local (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_buffer_bytes" (func $get_buf (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 4096))
  (global $mark (mut i32) (i32.const 4096))
  (global $cfg_ptr (mut i32) (i32.const 0))
  (global $cfg_len (mut i32) (i32.const 0))

  ;; strings
  (data (i32.const 256) "x-allow")                ;; 7
  (data (i32.const 272) "x-filter-version")       ;; 16
  (data (i32.const 296) "@V")                     ;; 2
  (data (i32.const 304) "x-filter-config")        ;; 15
  (data (i32.const 320) "denied by @V")           ;; 12
  (data (i32.const 336) "wasm_filter_denied")     ;; 18
  (data (i32.const 360) "version_filter @V configured") ;; 28
  (data (i32.const 392) "reject")                 ;; 6
  ;; serialized header map for the local reply: 1 pair (x-filter-version, @V)
  (data (i32.const 400) "\01\00\00\00\10\00\00\00\02\00\00\00x-filter-version\00@V\00")  ;; 4+8+17+3 = 32
  ;; out-params of hostcalls
  (global $ret_ptr i32 (i32.const 128))
  (global $ret_len i32 (i32.const 132))

  (func (export "proxy_abi_version_0_2_1"))

  ;; bump allocator; reset to $mark at the start of each stream callback
  (func (export "proxy_on_memory_allocate") (param $n i32) (result i32) (local $p i32) (local $need i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.and (i32.add (i32.add (local.get $p) (local.get $n)) (i32.const 7)) (i32.const -8)))
    (local.set $need (i32.sub (i32.shr_u (i32.add (global.get $heap) (i32.const 65535)) (i32.const 16)) (memory.size)))
    (if (i32.gt_s (local.get $need) (i32.const 0))
      (then (if (i32.eq (memory.grow (local.get $need)) (i32.const -1)) (then (return (i32.const 0))))))
    (local.get $p))

  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))

  (func (export "proxy_on_configure") (param $ctx i32) (param $size i32) (result i32)
    (global.set $cfg_ptr (i32.const 0))
    (global.set $cfg_len (i32.const 0))
    (if (i32.gt_u (local.get $size) (i32.const 0))
      (then
        (if (i32.eqz (call $get_buf (i32.const 7) (i32.const 0) (local.get $size) (global.get $ret_ptr) (global.get $ret_len)))
          (then
            (global.set $cfg_ptr (i32.load (global.get $ret_ptr)))
            (global.set $cfg_len (i32.load (global.get $ret_len)))))))
    (global.set $mark (global.get $heap))
    ;; configuration "reject..." -> refuse the plugin
    (if (i32.ge_u (global.get $cfg_len) (i32.const 6))
      (then (if (call $prefix6 (global.get $cfg_ptr)) (then (return (i32.const 0))))))
    (drop (call $log (i32.const 2) (i32.const 360) (i32.const 28)))
    (i32.const 1))

  (func $prefix6 (param $p i32) (result i32) (local $i i32)
    (block $no
      (loop $l
        (br_if $no (i32.ne (i32.load8_u (i32.add (local.get $p) (local.get $i)))
                           (i32.load8_u (i32.add (i32.const 392) (local.get $i)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br_if $l (i32.lt_u (local.get $i) (i32.const 6))))
      (return (i32.const 1)))
    (i32.const 0))

  (func (export "proxy_on_request_headers") (param $ctx i32) (param $n i32) (param $eos i32) (result i32)
    (global.set $heap (global.get $mark))
    (if (i32.ne (call $get_hv (i32.const 0) (i32.const 256) (i32.const 7) (global.get $ret_ptr) (global.get $ret_len)) (i32.const 0))
      (then
        (drop (call $local (i32.const 403) (i32.const 336) (i32.const 18) (i32.const 320) (i32.const 12)
                           (i32.const 400) (i32.const 32) (i32.const -1)))
        (return (i32.const 1))))
    (drop (call $add_hv (i32.const 0) (i32.const 272) (i32.const 16) (i32.const 296) (i32.const 2)))
    (i32.const 0))

  (func (export "proxy_on_response_headers") (param $ctx i32) (param $n i32) (param $eos i32) (result i32)
    (global.set $heap (global.get $mark))
    (drop (call $add_hv (i32.const 2) (i32.const 272) (i32.const 16) (i32.const 296) (i32.const 2)))
    (drop (call $add_hv (i32.const 2) (i32.const 304) (i32.const 15) (global.get $cfg_ptr) (global.get $cfg_len)))
    (i32.const 0))

  (func (export "proxy_on_done") (param i32) (result i32) (i32.const 1))
  (func (export "proxy_on_delete") (param i32))
)
