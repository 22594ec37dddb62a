"""Build C programs for an emulated Cortex-M4 and run them in QEMU with exact instruction counts.

The firmware is bare metal: our own vector table and reset handler (``csrc/harness/startup.c``),
semihosting file I/O (``hio_semihost.c``), and a linker script whose RAM ``LENGTH`` is the RAM
budget, so a model that does not fit fails to link. It runs on QEMU's ``mps2-an386`` board
(Cortex-M4 with FPU); a TCG plugin (``csrc/plugin/icount.c``, compiled here with the host gcc)
counts executed instructions, in total and between calls of ``harness_mark()``. The stack is
painted at reset and scanned after the run (``stack_used=`` in the program's output).

The same harness also builds for the host (:func:`build_host`) to test generated code with
sanitizers.

Example:
    >>> tc = find_toolchain()
    >>> tc is None or tc.qemu.endswith("qemu-system-arm")
    True
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from .._cache import cache_dir as _user_cache_dir

__all__ = [
    "CSRC_DIR", "HARNESS_DIR", "Toolchain", "find_toolchain", "M4_CFLAGS", "Firmware",
    "build_firmware", "build_host", "build_icount_plugin", "QemuRun", "run_qemu", "section_sizes",
    "MCUError",
]

CSRC_DIR = Path(__file__).resolve().parent / "csrc"
HARNESS_DIR = CSRC_DIR / "harness"
PLUGIN_SRC = CSRC_DIR / "plugin" / "icount.c"

M4_CFLAGS = ["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16", "-O2",
             "-std=c99", "-ffunction-sections", "-fdata-sections", "-Wall", "-Wextra"]
HOST_CFLAGS = ["-std=c99", "-O0", "-Wall", "-Wextra", "-DRNNPOOL_HOST"]
SANITIZE_FLAGS = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all",
                  "-fno-omit-frame-pointer"]


class MCUError(RuntimeError):
    """A build or emulator step failed; the message holds the tool's own diagnostics."""


@dataclass(frozen=True)
class Toolchain:
    """Paths of the cross compiler, binutils, emulator and host compiler."""

    gcc: str
    size: str
    nm: str
    qemu: str
    host_gcc: str


def find_toolchain() -> Optional[Toolchain]:
    """The Cortex-M4 toolchain and emulator found on PATH, or None if any tool is missing."""
    tools = [shutil.which(t) for t in ("arm-none-eabi-gcc", "arm-none-eabi-size",
                                       "arm-none-eabi-nm", "qemu-system-arm", "gcc")]
    if any(t is None for t in tools):
        return None
    return Toolchain(*tools)  # type: ignore[arg-type]


def _require_toolchain() -> Toolchain:
    tc = find_toolchain()
    if tc is None:
        raise MCUError("the Cortex-M4 toolchain is missing: install gcc-arm-none-eabi, "
                       "libnewlib-arm-none-eabi and qemu-system-arm")
    return tc


def _run(cmd: Sequence[str], cwd: Optional[Path] = None, what: str = "command") -> str:
    p = subprocess.run(list(cmd), cwd=cwd, capture_output=True, text=True)
    if p.returncode != 0:
        raise MCUError(f"{what} failed (rc {p.returncode}): {' '.join(map(str, cmd))}\n"
                       f"{p.stdout}{p.stderr}")
    return p.stdout + p.stderr


def _compile_cached(cc: str, flags: Sequence[str], sources: Sequence[Path],
                    include_dirs: Sequence[Path], what: str) -> List[Path]:
    """Compile each source to an object file, cached by (compiler, flags, source, headers).
    Kernel sources (``csrc/kernels``) see only the kernel headers, so their objects are shared
    by every model."""
    def header_digest(dirs) -> bytes:
        h = hashlib.sha256()
        for d in dirs:
            for f in sorted(Path(d).glob("*.h")):
                h.update(f.name.encode() + f.read_bytes())
        return h.digest()

    kernel_incs = [CSRC_DIR, CSRC_DIR / "kernels"]
    digests = {"kernel": header_digest(kernel_incs), "other": header_digest(include_dirs)}
    cache = _user_cache_dir() / "obj"
    cache.mkdir(parents=True, exist_ok=True)
    objs = []
    for src in sources:
        kind = "kernel" if Path(src).resolve().parent == (CSRC_DIR / "kernels") else "other"
        incs = kernel_incs if kind == "kernel" else list(include_dirs)
        key = hashlib.sha256()
        key.update("\0".join([cc, *flags, *map(str, incs)]).encode())
        key.update(digests[kind])
        key.update(Path(src).read_bytes())
        obj = cache / f"{Path(src).stem}-{key.hexdigest()[:20]}.o"
        if not obj.exists():
            fd, tmp = tempfile.mkstemp(suffix=".o", dir=cache)
            os.close(fd)
            try:
                _run([cc, *flags, *[f"-I{d}" for d in incs], "-c", str(src), "-o", tmp], what=what)
                os.replace(tmp, obj)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        objs.append(obj)
    return objs


@dataclass
class Firmware:
    """A linked Cortex-M4 program.

    Attributes:
        elf: path of the ELF file.
        sections: section name -> size in bytes (``arm-none-eabi-size -A``).
        flash_bytes: text (code, vectors, const data) + .data initialisers.
        static_ram_bytes: .data + .bss (includes the model's arena).
        stack_reserved: bytes reserved for the stack (within the RAM budget).
        ram_budget: RAM region length used for the link.
        mark_address: address of ``harness_mark`` (for the instruction-count plugin).
    """

    elf: Path
    sections: Dict[str, int]
    flash_bytes: int
    static_ram_bytes: int
    stack_reserved: int
    ram_budget: int
    mark_address: Optional[int]


def section_sizes(elf: Path, toolchain: Optional[Toolchain] = None) -> Dict[str, int]:
    """Section sizes of an ELF file, from ``arm-none-eabi-size -A``."""
    tc = toolchain or _require_toolchain()
    out = _run([tc.size, "-A", str(elf)], what="arm-none-eabi-size")
    sizes = {}
    for line in out.splitlines():
        m = re.match(r"^(\.\S+)\s+(\d+)\s+(\d+)", line)
        if m:
            sizes[m.group(1)] = int(m.group(2))
    return sizes


def _symbol_address(elf: Path, name: str, tc: Toolchain) -> Optional[int]:
    out = _run([tc.nm, str(elf)], what="arm-none-eabi-nm")
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2] == name:
            return int(parts[0], 16) & ~1
    return None


def build_firmware(sources: Sequence[Path], out_dir: Path, *, include_dirs: Sequence[Path] = (),
                   ram_budget: int = 128 * 1024, stack_bytes: int = 8 * 1024,
                   flash_budget: int = 2 * 1024 * 1024, extra_cflags: Sequence[str] = (),
                   with_harness_io: bool = True) -> Firmware:
    """Compile and link a bare-metal Cortex-M4 program with the harness startup code.

    Args:
        sources: C files of the program (one of them defines ``main``).
        out_dir: folder for objects, the rendered linker script and ``app.elf``.
        include_dirs: extra ``-I`` folders (the harness folder is always included).
        ram_budget: RAM region length in bytes; .data + .bss + stack beyond it fail the link.
        stack_bytes: stack reserved at the top of .bss (painted at reset).
        flash_budget: flash region length in bytes.
        extra_cflags: more compiler flags.
        with_harness_io: link the semihosting I/O (``hio_semihost.c``, ``hio_common.c``).

    Returns:
        Firmware with section sizes.

    Raises:
        MCUError: the compiler or linker failed (e.g. ``region `RAM' overflowed``).
    """
    tc = _require_toolchain()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if ram_budget <= stack_bytes or stack_bytes % 8:
        raise ValueError(f"need stack_bytes % 8 == 0 and ram_budget > stack_bytes, "
                         f"got {stack_bytes} and {ram_budget}")
    script = (HARNESS_DIR / "link.ld.in").read_text()
    script = (script.replace("@FLASH_BYTES@", str(flash_budget))
              .replace("@RAM_BYTES@", str(ram_budget)).replace("@STACK_BYTES@", str(stack_bytes)))
    ld = out_dir / "link.ld"
    ld.write_text(script)
    srcs = [Path(s) for s in sources] + [HARNESS_DIR / "startup.c"]
    if with_harness_io:
        srcs += [HARNESS_DIR / "hio_semihost.c", HARNESS_DIR / "hio_common.c"]
    flags = [*M4_CFLAGS, *extra_cflags]
    objs = _compile_cached(tc.gcc, flags, srcs, [HARNESS_DIR, *include_dirs], "Cortex-M4 compile")
    elf = out_dir / "app.elf"
    cmd = [tc.gcc, *flags, *map(str, objs), "-o", str(elf),
           "-nostartfiles", "--specs=nano.specs", "--specs=rdimon.specs", f"-T{ld}",
           "-Wl,--gc-sections", f"-Wl,-Map={out_dir / 'app.map'}"]
    try:
        _run(cmd, what="Cortex-M4 build")
    except MCUError as e:
        m = re.search(r"region `(\w+)' overflowed by (\d+) bytes", str(e))
        if m:
            what = "RAM budget" if m.group(1) == "RAM" else f"{m.group(1)} region"
            size = ram_budget if m.group(1) == "RAM" else flash_budget
            raise MCUError(f"the program does not fit the {what} of {size} bytes "
                           f"(with a {stack_bytes}-byte stack): {m.group(1)} overflowed by "
                           f"{m.group(2)} bytes") from None
        raise
    sections = section_sizes(elf, tc)
    text = sum(v for k, v in sections.items() if k in (".text", ".ARM.exidx"))
    data = sections.get(".data", 0)
    return Firmware(elf=elf, sections=sections, flash_bytes=text + data,
                    static_ram_bytes=data + sections.get(".bss", 0), stack_reserved=stack_bytes,
                    ram_budget=ram_budget, mark_address=_symbol_address(elf, "harness_mark", tc))


def build_host(sources: Sequence[Path], out_dir: Path, *, include_dirs: Sequence[Path] = (),
               sanitize: bool = True, extra_cflags: Sequence[str] = ()) -> Path:
    """Compile a harness program for the host (``hio_host.c``), with ASan/UBSan by default.

    Returns:
        Path of the executable ``out_dir/app_host``.
    """
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        raise MCUError("no host C compiler (gcc) on PATH")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    exe = out_dir / "app_host"
    srcs = [*map(Path, sources), HARNESS_DIR / "hio_host.c", HARNESS_DIR / "hio_common.c"]
    flags = [*HOST_CFLAGS, *(SANITIZE_FLAGS if sanitize else []), *extra_cflags]
    objs = _compile_cached(gcc, flags, srcs, [HARNESS_DIR, *include_dirs], "host compile")
    cmd = [gcc, *flags, *map(str, objs), "-o", str(exe)]
    _run(cmd, what="host build")
    return exe


def build_icount_plugin(cache_dir: Optional[Path] = None) -> Path:
    """Compile the instruction-counting TCG plugin with the host gcc (cached by source hash).

    Returns:
        Path of the shared object to pass as ``qemu-system-arm -plugin``.
    """
    src = PLUGIN_SRC.read_bytes()
    digest = hashlib.sha256(src).hexdigest()[:16]
    cache = Path(cache_dir) if cache_dir is not None else _user_cache_dir()
    so = cache / f"icount-{digest}.so"
    if so.exists():
        return so
    cache.mkdir(parents=True, exist_ok=True)
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        raise MCUError("no host C compiler (gcc) on PATH to build the QEMU plugin")
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=cache)
    os.close(fd)
    try:
        _run([gcc, "-shared", "-fPIC", "-O2", "-Wall", "-o", tmp, str(PLUGIN_SRC)],
             what="QEMU plugin build")
        os.replace(tmp, so)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return so


@dataclass
class QemuRun:
    """Result of :func:`run_qemu`.

    Attributes:
        returncode: QEMU's exit status (the program's ``main`` return value; 70 = fault,
            71 = stack overflow).
        stdout: what the program printed (semihosting).
        values: ``key=value`` integer lines of ``stdout``.
        instructions: total executed instructions (None without the plugin).
        marks: instruction count at each ``harness_mark()`` call.
    """

    returncode: int
    stdout: str
    values: Dict[str, int]
    instructions: Optional[int] = None
    marks: List[int] = field(default_factory=list)

    def intervals(self) -> List[int]:
        """Instructions between consecutive pairs of marks (mark 0-1, 2-3, ...)."""
        return [self.marks[i + 1] - self.marks[i] for i in range(0, len(self.marks) - 1, 2)]


def run_qemu(elf: Path, workdir: Path, *, timeout: float = 120.0, count_instructions: bool = True,
             mark_address: Optional[int] = None, check: bool = True) -> QemuRun:
    """Run a firmware on QEMU's mps2-an386 (Cortex-M4) with semihosting, always under a timeout.

    Args:
        elf: the program.
        workdir: QEMU's working folder (semihosting paths are relative to it).
        timeout: seconds before the emulator is killed (raises MCUError).
        count_instructions: load the instruction-counting plugin.
        mark_address: address whose executions are recorded (``Firmware.mark_address``).
        check: raise MCUError when the program exits non-zero.
    """
    tc = _require_toolchain()
    workdir = Path(workdir)
    cmd = [tc.qemu, "-M", "mps2-an386", "-cpu", "cortex-m4", "-nographic", "-monitor", "none",
           "-serial", "none", "-chardev", "stdio,id=semihost",
           "-semihosting-config", "enable=on,target=native,chardev=semihost",
           "-kernel", str(Path(elf).resolve())]
    log = workdir / "icount.log"
    if count_instructions:
        plugin = str(build_icount_plugin())
        if mark_address is not None:
            plugin += f",mark={mark_address:#x}"
        if log.exists():
            log.unlink()
        cmd += ["-plugin", plugin, "-d", "plugin", "-D", str(log.resolve())]
    try:
        p = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout,
                           stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise MCUError(f"QEMU did not finish within {timeout:.0f} s (hung or too slow): "
                       f"{' '.join(cmd)}") from None
    out = p.stdout
    values = {m.group(1): int(m.group(2))
              for m in re.finditer(r"^([A-Za-z_]\w*)=(-?\d+)\s*$", out, re.M)}
    run = QemuRun(returncode=p.returncode, stdout=out, values=values)
    if count_instructions and log.exists():
        text = log.read_text()
        m = re.search(r"icount total=(\d+)", text)
        run.instructions = int(m.group(1)) if m else None
        m = re.search(r"icount marks=([\d,]*)", text)
        run.marks = [int(v) for v in m.group(1).split(",") if v] if m else []
    if check and p.returncode != 0:
        raise MCUError(f"the emulated program exited with {p.returncode}"
                       f"{' (processor fault)' if p.returncode == 70 else ''}"
                       f"{' (stack overflow)' if p.returncode == 71 else ''}:\n{out}{p.stderr}")
    return run
