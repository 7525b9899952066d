;; Writes "hello from wasm", its argv[0] and argv[1] to stdout and its first
;; environment entry to stderr, one per line, then returns from `_start`.
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_sizes_get"
    (func $args_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get"
    (func $args_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_sizes_get"
    (func $environ_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get"
    (func $environ_get (param i32 i32) (result i32)))

  ;; 0: iovec, 8: bytes written, 16: greeting, 64: newline, 100: counts,
  ;; 1024: argv, 2048: argv strings, 8192: environ, 12288: environ strings.
  (memory (export "memory") 1)
  (data (i32.const 16) "hello from wasm\n")
  (data (i32.const 64) "\n")

  (func $write (param $fd i32) (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (if (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8))
      (then unreachable)))

  (func $strlen (param $p i32) (result i32) (local $n i32)
    (block $done
      (loop $next
        (br_if $done (i32.eqz (i32.load8_u (i32.add (local.get $p) (local.get $n)))))
        (local.set $n (i32.add (local.get $n) (i32.const 1)))
        (br $next)))
    (local.get $n))

  ;; Write the NUL-terminated string at $p and a newline.
  (func $line (param $fd i32) (param $p i32)
    (call $write (local.get $fd) (local.get $p) (call $strlen (local.get $p)))
    (call $write (local.get $fd) (i32.const 64) (i32.const 1)))

  (func (export "_start")
    (call $write (i32.const 1) (i32.const 16) (i32.const 16))
    (drop (call $args_sizes_get (i32.const 100) (i32.const 104)))
    (if (i32.lt_u (i32.load (i32.const 100)) (i32.const 2)) (then unreachable))
    (drop (call $args_get (i32.const 1024) (i32.const 2048)))
    (call $line (i32.const 1) (i32.load (i32.const 1024)))
    (call $line (i32.const 1) (i32.load (i32.const 1028)))
    (drop (call $environ_sizes_get (i32.const 108) (i32.const 112)))
    (if (i32.eqz (i32.load (i32.const 108))) (then unreachable))
    (drop (call $environ_get (i32.const 8192) (i32.const 12288)))
    (call $line (i32.const 2) (i32.load (i32.const 8192)))))
