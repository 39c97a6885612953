//! CPU placement: which CPU a core index means, pinning, and the system's
//! wake-up latency limit.

use std::io;

/// The CPU that core index `index` runs on: the index-th (modulo their
/// number) of the CPUs this process may use, as its affinity mask was when
/// first asked. Under a cpuset such as `2-3`, index 0 is CPU 2.
pub fn allowed_cpu(index: usize) -> usize {
    static ALLOWED: std::sync::OnceLock<Vec<usize>> = std::sync::OnceLock::new();
    let allowed = ALLOWED.get_or_init(|| {
        let set = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).ok();
        let cpus: Vec<usize> = (0..nix::sched::CpuSet::count())
            .filter(|&c| set.as_ref().is_some_and(|s| s.is_set(c).unwrap_or(false)))
            .collect();
        if cpus.is_empty() { vec![0] } else { cpus }
    });
    allowed[index % allowed.len()]
}

/// The kernel's limit on how long a CPU may take to wake from idle (PM QoS).
pub const CPU_DMA_LATENCY_PATH: &str = "/dev/cpu_dma_latency";

/// What /dev/cpu_dma_latency reads while nobody holds a limit.
const CPU_DMA_LATENCY_NONE: i32 = 2_000_000_000;

/// A limit on CPU wake-up latency, in force while this lives: with 0, idle
/// CPUs poll instead of halting, so a wake-up costs no idle-state exit (on
/// a VM, no halted vCPU to bring back). It is system-wide and costs power
/// and, on a VM, host CPU, which is why nothing holds it unless asked
/// (`bench --cpu-dma-latency`). The kernel drops the request when the file
/// closes, so it ends with the process even on SIGKILL.
pub struct CpuDmaLatency {
    _file: std::fs::File,
}

impl CpuDmaLatency {
    pub fn hold(us: u32) -> io::Result<CpuDmaLatency> {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .open(CPU_DMA_LATENCY_PATH)?;
        let us = i32::try_from(us).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        file.write_all(&us.to_ne_bytes())?;
        Ok(CpuDmaLatency { _file: file })
    }
}

/// The wake-up latency limit in force on this machine, in µs: `None` when
/// there is none, or when the device cannot be read (it needs root).
pub fn cpu_dma_latency_us() -> Option<u32> {
    use std::io::Read;
    let mut value = [0u8; 4];
    std::fs::File::open(CPU_DMA_LATENCY_PATH)
        .and_then(|mut f| f.read_exact(&mut value))
        .ok()?;
    match i32::from_ne_bytes(value) {
        CPU_DMA_LATENCY_NONE => None,
        us => u32::try_from(us).ok(),
    }
}

/// Pins the calling thread to core index `index` (see [`allowed_cpu`]).
pub fn pin_current_thread(index: usize) -> io::Result<()> {
    let mut set = nix::sched::CpuSet::new();
    set.set(allowed_cpu(index)).map_err(io::Error::from)?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).map_err(io::Error::from)
}
