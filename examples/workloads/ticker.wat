;; A tiny WASI (preview 1) service: prints "tick" every second, forever.
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 8) "tick\n")
  (func (export "_start")
    (loop $l
      (i32.store (i32.const 0) (i32.const 8))
      (i32.store (i32.const 4) (i32.const 5))
      (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 100)))
      ;; a relative clock subscription of 1 s at offset 200
      (i32.store8 (i32.const 208) (i32.const 0))
      (i32.store (i32.const 216) (i32.const 1))
      (i64.store (i32.const 224) (i64.const 1000000000))
      (drop (call $poll (i32.const 200) (i32.const 304) (i32.const 1) (i32.const 400)))
      (br $l))))
