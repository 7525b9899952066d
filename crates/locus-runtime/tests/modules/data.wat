;; Creates `out.txt` in its first preopened directory (fd 3, `/data`) and
;; writes a line to it; traps on any error.
(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_close"
    (func $fd_close (param i32) (result i32)))

  ;; 0: iovec, 8: bytes written, 20: opened fd, 100: path, 200: text.
  (memory (export "memory") 1)
  (data (i32.const 100) "out.txt")
  (data (i32.const 200) "written by wasm\n")

  (func (export "_start") (local $fd i32)
    ;; oflags 1 = O_CREAT; rights fd_read (2) | fd_write (64).
    (if (call $path_open (i32.const 3) (i32.const 0) (i32.const 100) (i32.const 7)
          (i32.const 1) (i64.const 66) (i64.const 0) (i32.const 0) (i32.const 20))
      (then unreachable))
    (local.set $fd (i32.load (i32.const 20)))
    (i32.store (i32.const 0) (i32.const 200))
    (i32.store (i32.const 4) (i32.const 16))
    (if (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8))
      (then unreachable))
    (if (call $fd_close (local.get $fd))
      (then unreachable))))
