//! The key-value store a multi-process client is created with: PJRT plugins exchange their
//! topology (TPU, GPU) and NCCL ids through it. The plugin calls three C callbacks (get with a
//! timeout, try_get, put) from its own threads; here they forward to a [`KeyValueStore`]
//! (rxla's coordination service client), prefix keys by platform as JAX does (`"cuda:"`),
//! return values with a deleter and report errors through the plugin's `callback_error`.

use std::ffi::{c_char, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

use crate::error::ErrorCode;
use crate::ffi;

/// Why a store call failed: the PJRT code the plugin sees, and a message for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvError {
    pub code: ErrorCode,
    pub message: String,
}

impl KvError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        KvError {
            code,
            message: message.into(),
        }
    }
}

/// A job-wide key-value store. Called from the plugin's threads, concurrently.
pub trait KeyValueStore: Send + Sync {
    /// The value of `key`, waiting up to `timeout` for it (`DeadlineExceeded` after that).
    fn get(&self, key: &str, timeout: Duration) -> Result<Vec<u8>, KvError>;
    /// The value of `key` if set, at once.
    fn try_get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError>;
    fn put(&self, key: &str, value: &[u8]) -> Result<(), KvError>;
}

/// What the callbacks' `user_arg` points at; owned by the client, freed after it is destroyed.
pub(crate) struct KvTarget {
    pub(crate) prefix: String,
    pub(crate) store: Arc<dyn KeyValueStore>,
}

/// A store and the prefix its keys get (e.g. `"cuda:"`), for the client create options.
#[derive(Clone)]
pub struct KvStoreOption {
    pub prefix: String,
    pub store: Arc<dyn KeyValueStore>,
}

impl std::fmt::Debug for KvStoreOption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KvStoreOption({:?})", self.prefix)
    }
}

/// This process's place in a multi-process job, as a client needs it.
#[derive(Clone)]
pub struct Job {
    pub process_id: u32,
    pub num_processes: u32,
    pub store: Arc<dyn KeyValueStore>,
}

fn raw_code(c: ErrorCode) -> ffi::PJRT_Error_Code {
    use ErrorCode::*;
    match c {
        Cancelled => 1,
        Unknown => 2,
        InvalidArgument => 3,
        DeadlineExceeded => 4,
        NotFound => 5,
        AlreadyExists => 6,
        PermissionDenied => 7,
        ResourceExhausted => 8,
        FailedPrecondition => 9,
        Aborted => 10,
        OutOfRange => 11,
        Unimplemented => 12,
        Internal => 13,
        Unavailable => 14,
        DataLoss => 15,
        Unauthenticated => 16,
        Other(c) => c,
    }
}

/// The plugin's error object for `e` (null if the plugin gave no `callback_error`).
unsafe fn report(cb: ffi::CallbackError, e: &KvError) -> *mut ffi::PJRT_Error {
    match cb {
        Some(f) => f(
            raw_code(e.code),
            e.message.as_ptr() as *const c_char,
            e.message.len(),
        ),
        None => std::ptr::null_mut(),
    }
}

unsafe fn key_of(target: &KvTarget, key: *const c_char, len: usize) -> Result<String, KvError> {
    let bytes = if len == 0 {
        &[][..]
    } else {
        std::slice::from_raw_parts(key as *const u8, len)
    };
    let key = std::str::from_utf8(bytes)
        .map_err(|_| KvError::new(ErrorCode::InvalidArgument, "key is not UTF-8"))?;
    Ok(format!("{}{key}", target.prefix))
}

/// Values go out as `len (8 bytes) ++ bytes`, pointing past the length, so the deleter (which
/// gets only the pointer) can rebuild the allocation.
fn leak_value(v: Vec<u8>) -> (*mut c_char, usize) {
    let n = v.len();
    let mut buf = Vec::with_capacity(8 + n);
    buf.extend_from_slice(&(n as u64).to_le_bytes());
    buf.extend_from_slice(&v);
    let boxed = buf.into_boxed_slice();
    let base = Box::into_raw(boxed) as *mut u8;
    // SAFETY: the allocation holds 8 + n bytes.
    (unsafe { base.add(8) } as *mut c_char, n)
}

unsafe extern "C" fn delete_value(value: *mut c_char) {
    if value.is_null() {
        return;
    }
    let base = (value as *mut u8).sub(8);
    let mut len = [0u8; 8];
    std::ptr::copy_nonoverlapping(base, len.as_mut_ptr(), 8);
    let n = u64::from_le_bytes(len) as usize;
    let slice = std::ptr::slice_from_raw_parts_mut(base, 8 + n);
    drop(Box::from_raw(slice));
}

/// Runs `f`, turning a panic into an `Internal` error (a panic must not cross into C).
fn guarded<T>(f: impl FnOnce() -> Result<T, KvError>) -> Result<T, KvError> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| {
        Err(KvError::new(
            ErrorCode::Internal,
            "rxla's key-value store panicked",
        ))
    })
}

pub(crate) unsafe extern "C" fn kv_get(raw: *mut c_void) -> *mut ffi::PJRT_Error {
    let args = &mut *(raw as *mut ffi::PJRT_KeyValueGetCallback_Args);
    let target = &*(args.user_arg as *const KvTarget);
    let timeout = Duration::from_millis(args.timeout_in_ms.max(0) as u64);
    let (key, len) = (args.key, args.key_size);
    match guarded(|| target.store.get(&key_of(target, key, len)?, timeout)) {
        Ok(v) => {
            (args.value, args.value_size) = leak_value(v);
            args.value_deleter_callback = Some(delete_value);
            std::ptr::null_mut()
        }
        Err(e) => report(args.callback_error, &e),
    }
}

pub(crate) unsafe extern "C" fn kv_try_get(raw: *mut c_void) -> *mut ffi::PJRT_Error {
    let args = &mut *(raw as *mut ffi::PJRT_KeyValueTryGetCallback_Args);
    let target = &*(args.user_arg as *const KvTarget);
    let (key, len) = (args.key, args.key_size);
    let got = guarded(|| {
        let key = key_of(target, key, len)?;
        target
            .store
            .try_get(&key)?
            .ok_or_else(|| KvError::new(ErrorCode::NotFound, format!("key `{key}` is not set")))
    });
    match got {
        Ok(v) => {
            (args.value, args.value_size) = leak_value(v);
            args.value_deleter_callback = Some(delete_value);
            std::ptr::null_mut()
        }
        Err(e) => report(args.callback_error, &e),
    }
}

pub(crate) unsafe extern "C" fn kv_put(raw: *mut c_void) -> *mut ffi::PJRT_Error {
    let args = &mut *(raw as *mut ffi::PJRT_KeyValuePutCallback_Args);
    let target = &*(args.user_arg as *const KvTarget);
    let (key, len) = (args.key, args.key_size);
    let value = if args.value_size == 0 {
        &[][..]
    } else {
        std::slice::from_raw_parts(args.value as *const u8, args.value_size)
    };
    match guarded(|| target.store.put(&key_of(target, key, len)?, value)) {
        Ok(()) => std::ptr::null_mut(),
        Err(e) => report(args.callback_error, &e),
    }
}

/// Fills the three callbacks of a create call; `target` must outlive the client.
pub(crate) fn install(args: &mut ffi::PJRT_Client_Create_Args, target: &KvTarget) {
    let user = target as *const KvTarget as *mut c_void;
    args.kv_get_callback = Some(kv_get);
    args.kv_get_user_arg = user;
    args.kv_try_get_callback = Some(kv_try_get);
    args.kv_try_get_user_arg = user;
    args.kv_put_callback = Some(kv_put);
    args.kv_put_user_arg = user;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::{Condvar, Mutex};

    /// An in-process store with blocking gets.
    #[derive(Default)]
    struct Memory {
        map: Mutex<HashMap<String, Vec<u8>>>,
        changed: Condvar,
    }

    impl KeyValueStore for Memory {
        fn get(&self, key: &str, timeout: Duration) -> Result<Vec<u8>, KvError> {
            let m = self.map.lock().unwrap();
            let (m, _) = self
                .changed
                .wait_timeout_while(m, timeout, |m| !m.contains_key(key))
                .unwrap();
            m.get(key).cloned().ok_or_else(|| {
                KvError::new(
                    ErrorCode::DeadlineExceeded,
                    format!("no `{key}` in {timeout:?}"),
                )
            })
        }
        fn try_get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
            if key.ends_with("boom") {
                panic!("boom");
            }
            Ok(self.map.lock().unwrap().get(key).cloned())
        }
        fn put(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
            self.map.lock().unwrap().insert(key.into(), value.to_vec());
            self.changed.notify_all();
            Ok(())
        }
    }

    thread_local! {
        static LAST: std::cell::RefCell<Option<(i32, String)>> = const { std::cell::RefCell::new(None) };
    }

    /// Stands in for the plugin's `callback_error`: records the error, returns a non-null token.
    unsafe extern "C" fn fake_error(
        code: ffi::PJRT_Error_Code,
        msg: *const c_char,
        n: usize,
    ) -> *mut ffi::PJRT_Error {
        let m =
            String::from_utf8_lossy(std::slice::from_raw_parts(msg as *const u8, n)).into_owned();
        LAST.with(|l| *l.borrow_mut() = Some((code, m)));
        std::ptr::NonNull::dangling().as_ptr()
    }

    fn last_error() -> (i32, String) {
        LAST.with(|l| l.borrow_mut().take())
            .expect("an error was reported")
    }

    /// Calls the callbacks the way a plugin does: args without `struct_size`, from any thread.
    fn get(t: &KvTarget, key: &str, timeout_ms: i32) -> Result<Vec<u8>, (i32, String)> {
        let mut a: ffi::PJRT_KeyValueGetCallback_Args = unsafe { std::mem::zeroed() };
        a.key = key.as_ptr() as *const c_char;
        a.key_size = key.len();
        a.timeout_in_ms = timeout_ms;
        a.callback_error = Some(fake_error);
        a.user_arg = t as *const KvTarget as *mut c_void;
        let err = unsafe { kv_get(&mut a as *mut _ as *mut c_void) };
        if !err.is_null() {
            return Err(last_error());
        }
        let v = unsafe { std::slice::from_raw_parts(a.value as *const u8, a.value_size) }.to_vec();
        unsafe { (a.value_deleter_callback.unwrap())(a.value) };
        Ok(v)
    }

    fn try_get(t: &KvTarget, key: &str) -> Result<Vec<u8>, (i32, String)> {
        let mut a: ffi::PJRT_KeyValueTryGetCallback_Args = unsafe { std::mem::zeroed() };
        a.key = key.as_ptr() as *const c_char;
        a.key_size = key.len();
        a.callback_error = Some(fake_error);
        a.user_arg = t as *const KvTarget as *mut c_void;
        let err = unsafe { kv_try_get(&mut a as *mut _ as *mut c_void) };
        if !err.is_null() {
            return Err(last_error());
        }
        let v = unsafe { std::slice::from_raw_parts(a.value as *const u8, a.value_size) }.to_vec();
        unsafe { (a.value_deleter_callback.unwrap())(a.value) };
        Ok(v)
    }

    fn put(t: &KvTarget, key: &str, value: &[u8]) {
        let mut a: ffi::PJRT_KeyValuePutCallback_Args = unsafe { std::mem::zeroed() };
        a.key = key.as_ptr() as *const c_char;
        a.key_size = key.len();
        a.value = value.as_ptr() as *const c_char;
        a.value_size = value.len();
        a.callback_error = Some(fake_error);
        a.user_arg = t as *const KvTarget as *mut c_void;
        assert!(unsafe { kv_put(&mut a as *mut _ as *mut c_void) }.is_null());
    }

    #[test]
    fn callbacks_forward_to_the_store_with_prefix_values_deleters_and_errors() {
        let store = Arc::new(Memory::default());
        let t = Arc::new(KvTarget {
            prefix: "cuda:".into(),
            store: store.clone(),
        });
        // NOT_FOUND at once.
        let (code, msg) = try_get(&t, "gpu_topology").unwrap_err();
        assert_eq!(code, 5);
        assert!(msg.contains("cuda:gpu_topology"), "{msg}");
        // Get with a timeout: DEADLINE_EXCEEDED after it.
        let t0 = std::time::Instant::now();
        assert_eq!(get(&t, "nccl_id", 100).unwrap_err().0, 4);
        assert!(t0.elapsed() >= Duration::from_millis(100));
        // A blocked get answered by a put on another thread; keys carry the prefix.
        let t2 = t.clone();
        let h = std::thread::spawn(move || get(&t2, "nccl_id", 10_000));
        std::thread::sleep(Duration::from_millis(50));
        let id: Vec<u8> = (0..128).collect();
        put(&t, "nccl_id", &id);
        assert_eq!(h.join().unwrap().unwrap(), id);
        assert_eq!(store.try_get("cuda:nccl_id").unwrap(), Some(id.clone()));
        assert_eq!(try_get(&t, "nccl_id").unwrap(), id);
        put(&t, "empty", b"");
        assert_eq!(get(&t, "empty", 0).unwrap(), b"");
        // Many threads at once (callbacks must be thread-safe).
        let hs: Vec<_> = (0..8u8)
            .map(|i| {
                let t = t.clone();
                std::thread::spawn(move || {
                    put(&t, &format!("k{i}"), &[i; 1000]);
                    for j in 0..8u8 {
                        assert_eq!(get(&t, &format!("k{j}"), 10_000).unwrap(), vec![j; 1000]);
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        // A panic in the store is an INTERNAL error, not an abort.
        assert_eq!(try_get(&t, "boom").unwrap_err().0, 13);
    }
}
