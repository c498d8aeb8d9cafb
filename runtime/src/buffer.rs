//! Device buffers: host <-> device copies, device-to-device copies, explicit deletion.

use std::sync::atomic::{AtomicU8, Ordering};

use crate::client::Client;
use crate::dtype::{ElementType, NativeType, TensorSpec};
use crate::error::{Error, Result};
use crate::ffi;

const LIVE: u8 = 0;
const DELETED: u8 = 1;
const DONATED: u8 = 2;

/// An array on one device. Dropping it frees the device memory.
pub struct Buffer {
    pub(crate) client: Client,
    pub(crate) raw: *mut ffi::PJRT_Buffer,
    spec: TensorSpec,
    state: AtomicU8,
}

// SAFETY: PJRT buffers may be used from any thread; our own state is atomic.
unsafe impl Send for Buffer {}
unsafe impl Sync for Buffer {}

impl Drop for Buffer {
    fn drop(&mut self) {
        let mut args = ffi::PJRT_Buffer_Destroy_Args::new();
        args.buffer = self.raw;
        let _ = self.client.plugin_ref().call(&mut args);
    }
}

impl std::fmt::Debug for Buffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Buffer({})", self.spec)
    }
}

fn element_count(dims: &[i64]) -> Result<usize> {
    let mut n: usize = 1;
    for &d in dims {
        if d < 0 {
            return Err(Error::InvalidArgument(format!(
                "negative dimension {d} in shape {dims:?}"
            )));
        }
        n = n.checked_mul(d as usize).ok_or_else(|| {
            Error::InvalidArgument(format!("shape {dims:?} has too many elements"))
        })?;
    }
    Ok(n)
}

impl Client {
    /// Copies `data` (row-major, shape `dims`) to the addressable device `device`.
    pub fn buffer_from_host<T: NativeType>(
        &self,
        data: &[T],
        dims: &[i64],
        device: usize,
    ) -> Result<Buffer> {
        let n = element_count(dims)?;
        if n != data.len() {
            return Err(Error::InvalidArgument(format!(
                "host data has {} elements but shape {dims:?} needs {n}",
                data.len()
            )));
        }
        // SAFETY: `T` is plain data of `size_of::<T>() == T::TYPE.size_in_bytes()` bytes.
        let bytes = unsafe {
            std::slice::from_raw_parts(data.as_ptr() as *const u8, std::mem::size_of_val(data))
        };
        self.buffer_from_bytes(bytes, T::TYPE, dims, device)
    }

    /// Copies raw little-endian bytes of element type `ty` to a device.
    pub fn buffer_from_bytes(
        &self,
        bytes: &[u8],
        ty: ElementType,
        dims: &[i64],
        device: usize,
    ) -> Result<Buffer> {
        let n = element_count(dims)?;
        if n * ty.size_in_bytes() != bytes.len() {
            return Err(Error::InvalidArgument(format!(
                "{} bytes given for a {ty} array of shape {dims:?} ({} bytes)",
                bytes.len(),
                n * ty.size_in_bytes()
            )));
        }
        let dev = self.device(device)?;
        let mut args = ffi::PJRT_Client_BufferFromHostBuffer_Args::new();
        args.client = self.inner.raw;
        args.data = bytes.as_ptr() as *const _;
        args.type_ = ty.to_raw();
        args.dims = dims.as_ptr();
        args.num_dims = dims.len();
        args.host_buffer_semantics = ffi::HOST_BUFFER_IMMUTABLE_ONLY_DURING_CALL;
        args.device = dev.raw;
        self.plugin_ref().call(&mut args)?;
        // Wait until the plugin is done with `bytes` (it may copy asynchronously).
        self.await_event(args.done_with_host_buffer)?;
        Ok(Buffer::from_raw(
            self.clone(),
            args.buffer,
            ty,
            dims.to_vec(),
        ))
    }

    /// Awaits and destroys an event; null is a no-op.
    pub(crate) fn await_event(&self, event: *mut ffi::PJRT_Event) -> Result<()> {
        if event.is_null() {
            return Ok(());
        }
        let mut wait = ffi::PJRT_Event_Await_Args::new();
        wait.event = event;
        let result = self.plugin_ref().call(&mut wait);
        let mut destroy = ffi::PJRT_Event_Destroy_Args::new();
        destroy.event = event;
        let _ = self.plugin_ref().call(&mut destroy);
        result
    }
}

impl Buffer {
    pub(crate) fn from_raw(
        client: Client,
        raw: *mut ffi::PJRT_Buffer,
        element_type: ElementType,
        dims: Vec<i64>,
    ) -> Buffer {
        Buffer {
            client,
            raw,
            spec: TensorSpec { element_type, dims },
            state: AtomicU8::new(LIVE),
        }
    }

    /// Wraps a buffer the plugin returned, asking it for type and shape.
    pub(crate) fn from_plugin(client: Client, raw: *mut ffi::PJRT_Buffer) -> Result<Buffer> {
        let plugin = client.plugin_ref();
        let mut ty = ffi::PJRT_Buffer_ElementType_Args::new();
        ty.buffer = raw;
        let mut dims = ffi::PJRT_Buffer_Dimensions_Args::new();
        dims.buffer = raw;
        let typed = plugin.call(&mut ty).and_then(|_| plugin.call(&mut dims));
        // Own it before any early return so that it is destroyed.
        let mut buf = Buffer::from_raw(client.clone(), raw, ElementType::U8, Vec::new());
        typed?;
        buf.spec.element_type = ElementType::from_raw(ty.type_).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "the plugin returned a buffer of element type {} that rxla does not support",
                ty.type_
            ))
        })?;
        buf.spec.dims = if dims.num_dims == 0 {
            Vec::new()
        } else {
            // SAFETY: `num_dims` values owned by the buffer.
            unsafe { std::slice::from_raw_parts(dims.dims, dims.num_dims).to_vec() }
        };
        Ok(buf)
    }

    pub fn element_type(&self) -> ElementType {
        self.spec.element_type
    }

    pub fn dims(&self) -> &[i64] {
        &self.spec.dims
    }

    pub fn spec(&self) -> &TensorSpec {
        &self.spec
    }

    pub fn element_count(&self) -> usize {
        self.spec.dims.iter().product::<i64>() as usize
    }

    pub fn size_in_bytes(&self) -> usize {
        self.element_count() * self.spec.element_type.size_in_bytes()
    }

    /// Index (among the client's addressable devices) of the device holding this buffer.
    pub fn device(&self) -> Result<usize> {
        let mut args = ffi::PJRT_Buffer_Device_Args::new();
        args.buffer = self.raw;
        self.client.plugin_ref().call(&mut args)?;
        self.client
            .device_index_of(args.device)
            .ok_or_else(|| Error::InvalidArgument("buffer is on a non-addressable device".into()))
    }

    /// Errors if the buffer was deleted or donated (checked with the plugin too, since PJRT
    /// deletes donated inputs on its own).
    pub fn check_live(&self) -> Result<()> {
        match self.state.load(Ordering::Acquire) {
            DELETED => return Err(Error::BufferDeleted("deleted explicitly")),
            DONATED => {
                return Err(Error::BufferDeleted(
                    "donated to an executable (its memory now holds an output)",
                ))
            }
            _ => {}
        }
        let mut args = ffi::PJRT_Buffer_IsDeleted_Args::new();
        args.buffer = self.raw;
        self.client.plugin_ref().call(&mut args)?;
        if args.is_deleted {
            return Err(Error::BufferDeleted("deleted by the runtime"));
        }
        Ok(())
    }

    pub fn is_deleted(&self) -> bool {
        self.check_live().is_err()
    }

    pub(crate) fn mark_donated(&self) {
        self.state.store(DONATED, Ordering::Release);
    }

    /// Frees the device memory now; later uses of this buffer are errors.
    pub fn delete(&self) -> Result<()> {
        self.check_live()?;
        let mut args = ffi::PJRT_Buffer_Delete_Args::new();
        args.buffer = self.raw;
        self.client.plugin_ref().call(&mut args)?;
        self.state.store(DELETED, Ordering::Release);
        Ok(())
    }

    /// Copies the array to the host as raw little-endian bytes (row-major).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut out = vec![0u8; self.size_in_bytes()];
        self.copy_into(out.as_mut_ptr(), out.len())?;
        Ok(out)
    }

    /// Copies the array to the host; `T` must match the buffer's element type.
    pub fn to_host<T: NativeType>(&self) -> Result<Vec<T>> {
        if T::TYPE != self.spec.element_type {
            return Err(Error::InvalidArgument(format!(
                "buffer holds {} but {} was requested",
                self.spec.element_type,
                T::TYPE
            )));
        }
        if T::TYPE == ElementType::Pred {
            // Read as bytes first: not every byte is a valid `bool`.
            let bytes = self.to_bytes()?;
            if let Some(b) = bytes.iter().find(|&&b| b > 1) {
                return Err(Error::InvalidArgument(format!(
                    "pred buffer holds byte {b}, not 0 or 1"
                )));
            }
            let n = bytes.len();
            let mut out: Vec<T> = Vec::with_capacity(n);
            // SAFETY: every byte is 0 or 1, a valid bool, and T is bool here.
            unsafe {
                std::ptr::copy_nonoverlapping(bytes.as_ptr(), out.as_mut_ptr() as *mut u8, n);
                out.set_len(n);
            }
            return Ok(out);
        }
        let n = self.element_count();
        let mut out: Vec<T> = Vec::with_capacity(n);
        self.copy_into(out.as_mut_ptr() as *mut u8, std::mem::size_of::<T>() * n)?;
        // SAFETY: the plugin wrote all `n` elements; every bit pattern is a valid `T`.
        unsafe { out.set_len(n) };
        Ok(out)
    }

    fn copy_into(&self, dst: *mut u8, len: usize) -> Result<()> {
        self.check_live()?;
        let mut args = ffi::PJRT_Buffer_ToHostBuffer_Args::new();
        args.src = self.raw;
        args.dst = dst as *mut _;
        args.dst_size = len;
        self.client.plugin_ref().call(&mut args)?;
        self.client.await_event(args.event)
    }

    /// Copies this buffer to another addressable device.
    pub fn copy_to_device(&self, device: usize) -> Result<Buffer> {
        self.check_live()?;
        let dev = self.client.device(device)?;
        let mut args = ffi::PJRT_Buffer_CopyToDevice_Args::new();
        args.buffer = self.raw;
        args.dst_device = dev.raw;
        self.client.plugin_ref().call(&mut args)?;
        Ok(Buffer::from_raw(
            self.client.clone(),
            args.dst_buffer,
            self.spec.element_type,
            self.spec.dims.clone(),
        ))
    }

    /// Blocks until the buffer's contents are computed; surfaces asynchronous errors.
    pub fn block_until_ready(&self) -> Result<()> {
        let mut args = ffi::PJRT_Buffer_ReadyEvent_Args::new();
        args.buffer = self.raw;
        self.client.plugin_ref().call(&mut args)?;
        self.client.await_event(args.event)
    }
}
