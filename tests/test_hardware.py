"""Hardware detection from fake /proc/cpuinfo text, the recommendation table, the `compress hardware`
command and the report's environment. No model is loaded."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from click.testing import CliRunner

from compress import hardware
from compress import recommend as recommend_module
from compress.errors import Unavailable
from compress.hardware import (
    ISA_CLASSES,
    Cuda,
    Gpu,
    Hardware,
    Runtime,
    parse_cpuinfo,
    parse_meminfo,
    probe_cuda,
    probe_runtime,
)
from compress.recommend import TABLE, recommend


def one_line(text: str) -> str:
    return " ".join(text.split())


# Flags as on the Sapphire Rapids class Xeon this project is developed on (KVM guest).
SPR_FLAGS = one_line(
    """
    fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ss
    ht syscall nx pdpe1gb rdtscp lm constant_tsc rep_good nopl xtopology nonstop_tsc cpuid
    tsc_known_freq pni pclmulqdq ssse3 fma cx16 pcid sse4_1 sse4_2 x2apic movbe popcnt
    tsc_deadline_timer aes xsave avx f16c rdrand hypervisor lahf_lm abm 3dnowprefetch cpuid_fault
    fsgsbase tsc_adjust bmi1 hle avx2 smep bmi2 erms invpcid rtm avx512f avx512dq rdseed adx smap
    avx512ifma clflushopt clwb avx512cd sha_ni avx512bw avx512vl xsaveopt xsavec xgetbv1 xsaves avx_vnni
    avx512_bf16 arat avx512vbmi umip avx512_vbmi2 gfni vaes vpclmulqdq avx512_vnni avx512_bitalg
    avx512_vpopcntdq rdpid cldemote movdiri movdir64b fsrm serialize tsxldtrk amx_bf16 avx512_fp16
    amx_tile amx_int8 arch_capabilities
    """
)
ZEN3_FLAGS = one_line(
    """
    fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ht
    syscall nx mmxext fxsr_opt pdpe1gb rdtscp lm constant_tsc rep_good nopl nonstop_tsc cpuid
    extd_apicid aperfmperf tsc_known_freq pni pclmulqdq ssse3 fma cx16 pcid sse4_1 sse4_2 x2apic movbe
    popcnt aes xsave avx f16c rdrand hypervisor lahf_lm cmp_legacy cr8_legacy abm sse4a misalignsse
    3dnowprefetch topoext perfctr_core invpcid_single ssbd ibrs ibpb stibp vmmcall fsgsbase bmi1 avx2
    smep bmi2 invpcid rdseed adx smap clflushopt clwb sha_ni xsaveopt xsavec xgetbv1 clzero xsaveerptr
    rdpru wbnoinvd arat npt nrip_save vaes vpclmulqdq rdpid
    """
)
ZEN2_FLAGS = one_line(
    """
    fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ht
    syscall nx mmxext fxsr_opt pdpe1gb rdtscp lm constant_tsc rep_good nopl nonstop_tsc cpuid
    extd_apicid tsc_known_freq pni pclmulqdq ssse3 fma cx16 sse4_1 sse4_2 movbe popcnt aes xsave avx
    f16c rdrand hypervisor lahf_lm cmp_legacy cr8_legacy abm sse4a misalignsse 3dnowprefetch osvw
    topoext ssbd ibrs ibpb stibp vmmcall fsgsbase tsc_adjust bmi1 avx2 smep bmi2 rdseed adx smap
    clflushopt clwb sha_ni xsaveopt xsavec xgetbv1 clzero xsaveerptr arat npt nrip_save umip rdpid
    """
)
ALDER_LAKE_FLAGS = one_line(
    """
    fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush dts acpi mmx fxsr
    sse sse2 ss ht tm pbe syscall nx pdpe1gb rdtscp lm constant_tsc art arch_perfmon pebs bts rep_good
    nopl xtopology nonstop_tsc cpuid aperfmperf tsc_known_freq pni pclmulqdq dtes64 monitor ds_cpl vmx
    smx est tm2 ssse3 sdbg fma cx16 xtpr pdcm pcid sse4_1 sse4_2 x2apic movbe popcnt tsc_deadline_timer
    aes xsave avx f16c rdrand lahf_lm abm 3dnowprefetch cpuid_fault epb ssbd ibrs ibpb stibp
    ibrs_enhanced fsgsbase tsc_adjust bmi1 avx2 smep bmi2 erms invpcid rdseed adx smap clflushopt clwb
    intel_pt sha_ni xsaveopt xsavec xgetbv1 xsaves split_lock_detect avx_vnni dtherm ida arat pln pts
    hwp umip pku ospke waitpkg gfni vaes vpclmulqdq tme rdpid movdiri movdir64b fsrm md_clear serialize
    pconfig arch_lbr ibt arch_capabilities
    """
)
N1_FEATURES = (
    "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp ssbs"
)
V1_FEATURES = one_line(
    """
    fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt fcma lrcpc
    dcpop sha3 sm3 sm4 asimddp sha512 sve asimdfhm dit uscat ilrcpc flagm ssbs paca pacg dcpodp svei8mm
    svebf16 i8mm bf16 dgh rng
    """
)


def x86_cpuinfo(vendor: str, family: int, model: str, flags: str, cores: int, threads: int = 1) -> str:
    """cpuinfo of one socket with `cores` cores of `threads` hardware threads each."""
    blocks = []
    for n in range(cores * threads):
        blocks.append(
            textwrap.dedent(f"""\
            processor\t: {n}
            vendor_id\t: {vendor}
            cpu family\t: {family}
            model name\t: {model}
            physical id\t: 0
            siblings\t: {cores * threads}
            core id\t\t: {n // threads}
            cpu cores\t: {cores}
            flags\t\t: {flags}
            bogomips\t: 5200.00
            """)
        )
    return "\n".join(blocks)


def arm_cpuinfo(features: str, part: str, cpus: int, implementer: str = "0x41") -> str:
    blocks = [
        f"processor\t: {n}\nBogoMIPS\t: 2100.00\nFeatures\t: {features}\nCPU implementer\t: {implementer}\n"
        f"CPU architecture: 8\nCPU variant\t: 0x1\nCPU part\t: {part}\nCPU revision\t: 1\n"
        for n in range(cpus)
    ]
    return "\n".join(blocks)


SAPPHIRE_RAPIDS = x86_cpuinfo("GenuineIntel", 6, "Intel(R) Xeon(R) Platinum 8480+", SPR_FLAGS, 4, 2)
EPYC_ZEN2 = x86_cpuinfo("AuthenticAMD", 23, "AMD EPYC 7B12", ZEN2_FLAGS, 2, 2)
EPYC_ZEN3 = x86_cpuinfo("AuthenticAMD", 25, "AMD EPYC 7R13 Processor", ZEN3_FLAGS, 4)
ALDER_LAKE = x86_cpuinfo("GenuineIntel", 6, "12th Gen Intel(R) Core(TM) i7-12700K", ALDER_LAKE_FLAGS, 8, 2)
NEOVERSE_N1 = arm_cpuinfo(N1_FEATURES, "0xd0c", 4)
NEOVERSE_V1 = arm_cpuinfo(V1_FEATURES, "0xd40", 4)

CPU_DEVICES = {"torch": ("cpu",), "onnxruntime": ("CPUExecutionProvider",), "openvino": ("CPU",), "nncf": ()}


def runtimes(*missing: str) -> tuple[Runtime, ...]:
    return tuple(
        Runtime(name, reason="not importable (ModuleNotFoundError: test)")
        if name in missing
        else Runtime(name, version="1.0", devices=devices)
        for name, devices in CPU_DEVICES.items()
    )


def machine(cpuinfo: str, *missing: str, cuda: Cuda | None = None) -> Hardware:
    return Hardware(
        cpu=parse_cpuinfo(cpuinfo),
        memory_gb=16.0,
        cuda=cuda or Cuda(reason="test: no GPU"),
        runtimes=runtimes(*missing),
    )


def test_sapphire_rapids():
    cpu = parse_cpuinfo(SAPPHIRE_RAPIDS)
    assert (cpu.vendor, cpu.arch, cpu.model) == ("GenuineIntel", "x86_64", "Intel(R) Xeon(R) Platinum 8480+")
    assert cpu.features == {
        "avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8",
        "amx_bf16",
    }  # fmt: skip
    assert (cpu.physical_cores, cpu.logical_cpus) == (4, 8)
    assert cpu.isa_class == "amx"
    rec = recommend(machine(SAPPHIRE_RAPIDS))
    assert (rec.scheme, rec.activations, rec.runtime, rec.format) == (
        "int8",
        "static",
        "openvino",
        "openvino",
    )
    assert rec.measured and rec.speedup == recommend_module.OPENVINO_STATIC_AMX.speedup
    assert "2.32-3.33x" in rec.reason and "speed.md" in rec.reason and "skipped" not in rec.reason


def test_affinity_counts_only_the_cpus_this_process_may_use():
    # CPUs 0 and 1 are the two hardware threads of core 0.
    cpu = parse_cpuinfo(SAPPHIRE_RAPIDS, allowed={0, 1})
    assert (cpu.physical_cores, cpu.logical_cpus) == (1, 2)
    cpu = parse_cpuinfo(SAPPHIRE_RAPIDS, allowed={0, 2, 4})
    assert (cpu.physical_cores, cpu.logical_cpus) == (3, 3)


def test_amx_falls_back_when_runtimes_are_missing():
    rec = recommend(machine(SAPPHIRE_RAPIDS, "openvino"))
    want = ("bf16", "torch", "safetensors", recommend_module.TORCH_BF16_AMX.speedup)
    assert (rec.scheme, rec.runtime, rec.format, rec.speedup) == want
    assert "skipped because openvino is unavailable here: not importable" in rec.reason
    assert rec.reason.count("openvino is unavailable") == 1  # two choices on it, said once
    assert "2.97-3.83x over float torch" in rec.reason

    rec = recommend(machine(SAPPHIRE_RAPIDS, "openvino", "torch"))
    assert (rec.scheme, rec.activations, rec.runtime) == ("int8", "dynamic", "onnxruntime")
    assert "1.39-1.73x" in rec.reason and "; and torch is unavailable here" in rec.reason


def test_a_runtime_without_a_cpu_device_is_skipped():
    hw = machine(SAPPHIRE_RAPIDS)
    others = tuple(r for r in hw.runtimes if r.name != "openvino")
    hw = Hardware(cpu=hw.cpu, runtimes=(*others, Runtime("openvino", version="1.0", devices=("GPU",))))
    rec = recommend(hw)
    assert rec.runtime == "torch" and "openvino lists no CPU device (GPU)" in rec.reason


@pytest.mark.parametrize("cpuinfo", [EPYC_ZEN2, EPYC_ZEN3], ids=["zen2", "zen3"])
def test_amd_epyc_avx2(cpuinfo):
    cpu = parse_cpuinfo(cpuinfo)
    assert cpu.vendor == "AuthenticAMD" and cpu.model.startswith("AMD EPYC")
    assert cpu.features == {"avx2"} and cpu.isa_class == "avx2"
    features = machine(cpuinfo).to_dict()["cpu"]["features"]
    assert features["avx2"] and not features["avx512f"] and not features["avx512_vnni"]
    rec = recommend(machine(cpuinfo))
    assert (rec.scheme, rec.activations, rec.runtime, rec.weight_bits) == (
        "int8",
        "dynamic",
        "onnxruntime",
        7,
    )
    assert rec.measured and "1.41x" in rec.reason and "peers.md" in rec.reason
    assert "(7-bit)" in rec.reason


def test_avx2_without_onnxruntime_says_the_fallback_is_not_faster():
    rec = recommend(machine(EPYC_ZEN3, "onnxruntime"))
    assert (rec.scheme, rec.activations, rec.runtime) == ("int8", "none", "torch")
    assert "onnxruntime is unavailable" in rec.reason and "0.93-1.07x" in rec.reason


def test_alder_lake_avx_vnni():
    cpu = parse_cpuinfo(ALDER_LAKE)
    assert cpu.features == {"avx2", "avx_vnni"} and cpu.isa_class == "avx-vnni"
    assert (cpu.physical_cores, cpu.logical_cpus) == (8, 16)
    rec = recommend(machine(ALDER_LAKE))
    assert (rec.runtime, rec.activations, rec.weight_bits) == ("onnxruntime", "dynamic", 8)
    assert not rec.measured and rec.speedup is None and "not measured" in rec.reason


def test_neoverse_n1():
    cpu = parse_cpuinfo(NEOVERSE_N1)
    assert (cpu.vendor, cpu.model, cpu.arch) == ("ARM", "Neoverse-N1", "aarch64")
    assert cpu.features == {"asimd", "asimddp"} and cpu.isa_class == "arm-dotprod"
    assert cpu.logical_cpus == 4 and cpu.physical_cores is None  # ARM's cpuinfo has no core ids
    rec = recommend(machine(NEOVERSE_N1))
    assert (rec.scheme, rec.activations, rec.runtime, rec.weight_bits) == (
        "int8",
        "dynamic",
        "onnxruntime",
        8,
    )
    assert not rec.measured and "not measured" in rec.reason


def test_neoverse_v1():
    cpu = parse_cpuinfo(NEOVERSE_V1)
    assert cpu.model == "Neoverse-V1"
    assert cpu.features == {"asimd", "asimddp", "i8mm", "sve", "bf16"} and "sve2" not in cpu.features
    assert cpu.isa_class == "arm-i8mm"
    rec = recommend(machine(NEOVERSE_V1))
    assert rec.runtime == "onnxruntime" and not rec.measured and "not measured" in rec.reason


def test_another_implementers_part_is_not_named_from_arms_table():
    cpu = parse_cpuinfo(arm_cpuinfo(N1_FEATURES, "0xd0c", 2, implementer="0xc0"))
    assert (cpu.vendor, cpu.model, cpu.isa_class) == ("Ampere", "Ampere CPU part 0xd0c", "arm-dotprod")


def test_no_cpuinfo_uses_the_platform():
    cpu = parse_cpuinfo("", machine="arm64", processor="arm")
    assert (cpu.arch, cpu.model, cpu.isa_class) == ("aarch64", "arm", "generic")
    assert cpu.physical_cores is None and cpu.logical_cpus is None and not cpu.features


def test_parse_meminfo():
    assert parse_meminfo("MemTotal:       24683664 kB\nMemFree: 1 kB\n") == 23.5
    assert parse_meminfo("") is None


def test_every_isa_class_has_choices_and_every_figure_a_source():
    assert set(TABLE) == set(ISA_CLASSES)
    for choices in TABLE.values():
        assert choices
        for c in choices:
            if c.speedup is None:
                assert c.source == "not measured on this class of CPU"
            else:
                assert c.source and c.over and c.speedup[0] <= c.speedup[1]


def test_no_usable_runtime_is_one_sentence():
    with pytest.raises(Unavailable, match="No runtime compress can recommend is usable here"):
        recommend(machine(EPYC_ZEN3, "onnxruntime", "torch"))


def test_a_cuda_device_is_named_in_the_reason():
    cuda = Cuda(devices=(Gpu("NVIDIA H200", "9.0", 139.8),), version="12.8")
    hw = machine(EPYC_ZEN3, cuda=cuda)
    assert "NVIDIA H200, compute capability 9.0" in recommend(hw).reason
    assert hw.to_dict()["cuda"] == {
        "available": True,
        "reason": None,
        "version": "12.8",
        "devices": [{"name": "NVIDIA H200", "capability": "9.0", "memory_gb": 139.8}],
    }


def test_a_runtime_that_fails_to_import_is_unavailable(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if it were not installed
    rt = probe_runtime("openvino", hardware.INSPECT["openvino"])
    assert not rt.available and rt.reason.startswith("not importable (ModuleNotFoundError")

    # A broken install: its shared library is missing (OSError, not ImportError).
    (tmp_path / "broken_runtime.py").write_text("raise OSError('libfoo.so: cannot open shared object')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    rt = probe_runtime("broken_runtime")
    assert not rt.available and "OSError: libfoo.so" in rt.reason


def test_a_runtime_whose_device_listing_fails_is_unavailable():
    def fail(module):
        raise RuntimeError("no plugins")

    rt = probe_runtime("json", fail)
    assert (
        not rt.available
        and rt.reason == "imported, but listing its devices failed (RuntimeError: no plugins)"
    )


def test_no_torch_means_no_cuda(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    cuda = probe_cuda()
    assert not cuda.devices and cuda.reason.startswith("torch is not importable")


def test_this_machine():
    hw = hardware.detect()
    assert hw is hardware.detect()  # probed once
    assert hw.cpu.logical_cpus and hw.cpu.logical_cpus >= 1
    assert hw.isa_class in ISA_CLASSES
    assert {r.name for r in hw.runtimes} == {"torch", "onnxruntime", "openvino", "nncf"}
    assert hw.runtime("torch").available
    assert recommend(hw).reason


def test_import_is_cheap():
    code = (
        "import sys, compress.hardware, compress.recommend\n"
        "heavy = {'torch', 'onnxruntime', 'openvino', 'nncf'} & set(sys.modules)\n"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_hardware_command_prints_json(monkeypatch):
    from compress.cli import main

    result = CliRunner().invoke(main, ["hardware", "--json", "-", "-q"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert set(data) == {"cpu", "memory_gb", "cuda", "runtimes", "recommendation"}
    assert data["cpu"]["isa_class"] in ISA_CLASSES
    assert set(data["recommendation"]) >= {"scheme", "activations", "runtime", "format", "reason"}

    # A machine it does not run on: the table on stderr, the recommendation sentence after it.
    monkeypatch.setattr(hardware, "detect", lambda: machine(NEOVERSE_N1, "openvino"))
    result = CliRunner().invoke(main, ["hardware"], catch_exceptions=False)
    assert result.exit_code == 0 and result.stdout == ""
    assert "Neoverse-N1" in result.stderr and "asimddp" in result.stderr
    assert "openvino" in result.stderr and "unavailable" in result.stderr
    assert "recommended:" in result.stderr and "not measured" in result.stderr


def test_environment_carries_the_hardware():
    from compress.eval.environment import environment

    env = environment(threads=1)
    assert env["hardware"] == hardware.detect().to_dict()
    assert env["cpu"] == env["hardware"]["cpu"]["model"]
    assert {"python", "platform", "cpu_count", "threads", "gpu", "versions"} <= set(env)
    assert env["gpu"]["available"] == env["hardware"]["cuda"]["available"]
