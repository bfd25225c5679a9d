"""The NVML sampler through the pynvml-shaped fake: averaging, energy accounting, unsupported fields, lost GPUs, MIG."""

from __future__ import annotations

from datetime import UTC, datetime

import pynvml
import pytest
from structlog.testing import capture_logs

from collectors.energy import EnergyMeter
from collectors.sampler import NvmlSampler, NvmlUnavailable, init_nvml, mig_memory_gb
from collectors.simnvml import DeviceState, SimulatedNvml
from tests.collectors.fake_nvml import T0, Clock, FakeNvml, Handle, make_fake, split_mig


def run_interval(sampler: NvmlSampler, clock: Clock, fake: FakeNvml, steps: list[dict[int, dict[str, int]]], step_s: float = 1.0):
    """Begin at clock(), then for each step: apply device field changes, advance, poll. Returns finish()."""
    sampler.begin(clock())
    sampler.poll()
    for changes in steps:
        clock.tick(step_s)
        for index, fields in changes.items():
            for name, value in fields.items():
                setattr(fake.devices[index], name, value)
        sampler.poll()
    return sampler.finish(clock())


def started(n: int = 2, **fields: object) -> tuple[NvmlSampler, FakeNvml, Clock]:
    clock = Clock()
    fake = make_fake(n, clock, **fields)
    sampler = NvmlSampler(fake, "node-a", clock=clock)
    sampler.start()
    return sampler, fake, clock


def test_poll_average_energy_and_deterministic_ids() -> None:
    sampler, fake, clock = started(1, unsupported={"nvmlDeviceGetSamples"})
    steps = [
        {0: {"util_gpu": u, "util_memory": u // 2, "power_mw": p, "energy_mj": e, "memory_used": 10 * 2**30}}
        for u, p, e in [(20, 100_000, 100_000), (40, 200_000, 300_000), (60, 300_000, 600_000), (80, 400_000, 1_000_000)]
    ]
    [sample] = run_interval(sampler, clock, fake, steps)
    # polls: initial (0 %, 70 W) + four steps -> mean of 0,20,40,60,80
    assert sample.utilization_pct == pytest.approx(40.0)
    assert sample.memory_utilization_pct == pytest.approx(20.0)
    assert sample.power_watts == pytest.approx((70 + 100 + 200 + 300 + 400) / 5)
    assert sample.energy_joules == pytest.approx(1000.0)  # counter 0 -> 1_000_000 mJ
    assert sample.energy_counter_mj == 1_000_000
    assert sample.memory_used_bytes == 10 * 2**30 and sample.memory_total_bytes == 80 * 2**30
    assert sample.sample_id == f"node-a/GPU-0000-aaaa/{int(T0 * 1_000_000)}"
    assert sample.interval_start == datetime.fromtimestamp(T0, UTC) and sample.interval_start.tzinfo is UTC
    assert (sample.interval_end - sample.interval_start).total_seconds() == pytest.approx(4.0)


def test_driver_samples_preferred_and_limited_to_the_interval() -> None:
    sampler, fake, clock = started(1)
    us = int(T0 * 1e6)
    # one sample before the interval (must be ignored), six inside
    fake.devices[0].util_samples.extend([(us - 500_000, 100), *((us + k * 500_000, v) for k, v in enumerate([10, 20, 30, 40, 50, 60], 1))])
    fake.devices[0].util_gpu = 99  # instantaneous polls would say 99: the driver's samples must win
    [sample] = run_interval(sampler, clock, fake, [{}, {}, {}, {}])
    assert sample.utilization_pct == pytest.approx(35.0)
    # next interval: already-seen samples are not counted again; with no new samples it falls back to polls
    [again] = run_interval(sampler, clock, fake, [{}, {}])
    assert again.utilization_pct == pytest.approx(99.0)


def test_not_supported_fields_are_zero_or_none_and_never_crash() -> None:
    unsupported = {
        "nvmlDeviceGetPowerUsage",
        "nvmlDeviceGetTotalEnergyConsumption",
        "nvmlDeviceGetTemperature",
        "nvmlDeviceGetTotalEccErrors",
        "nvmlDeviceGetProcessUtilization",
        "nvmlDeviceGetSamples",
        "nvmlDeviceGetClockInfo",
        "nvmlDeviceRegisterEvents",
        "nvmlDeviceGetMigMode",
    }
    sampler, fake, clock = started(1, unsupported=unsupported, util_gpu=55, processes={4242: 2**30})
    [sample] = run_interval(sampler, clock, fake, [{}, {}])
    assert sample.utilization_pct == pytest.approx(55.0)
    assert (sample.power_watts, sample.energy_joules, sample.energy_counter_mj) == (0.0, 0.0, None)
    assert (sample.temperature_c, sample.sm_clock_mhz, sample.xid_errors, sample.ecc_errors_corrected) == (0, 0, 0, 0)
    assert [(p.pid, p.gpu_memory_bytes, p.sm_utilization_pct) for p in sample.processes] == [(4242, 2**30, None)]
    assert sum(sampler.stats.nvml_errors.values()) == 0  # NotSupported is a capability, not an error
    assert {"nvmlDeviceGetPowerUsage", "xid"} <= sampler.entities[0].unsupported


def test_gpu_lost_mid_run_is_counted_and_others_continue() -> None:
    sampler, fake, clock = started(3)
    run_interval(sampler, clock, fake, [{1: {"lost": True}}, {}])
    samples = run_interval(sampler, clock, fake, [{0: {"util_gpu": 50}, 2: {"util_gpu": 50}}])
    assert [s.gpu_uuid for s in samples] == ["GPU-0000-aaaa", "GPU-0002-aaaa"]
    assert sampler.stats.gpus_lost == 1
    assert len(sampler.entities) == 2


def test_other_nvml_errors_are_counted_per_class() -> None:
    sampler, fake, clock = started(1)

    def flaky(handle: object) -> int:
        raise pynvml.NVMLError_Unknown()

    fake.nvmlDeviceGetPowerUsage = flaky  # type: ignore[method-assign]
    [sample] = run_interval(sampler, clock, fake, [{}])
    assert sample.power_watts == 0.0
    assert sampler.stats.nvml_errors["NVMLError_Unknown"] == 2


def test_energy_counter_reset_does_not_invent_energy() -> None:
    sampler, fake, clock = started(1, energy_mj=5_000_000)
    # +100 J, then driver restart (counter back to 2000 mJ), then +3 J
    [sample] = run_interval(sampler, clock, fake, [{0: {"energy_mj": 5_100_000}}, {0: {"energy_mj": 2_000}}, {0: {"energy_mj": 5_000}}])
    assert sample.energy_joules == pytest.approx(103.0)
    assert sampler.stats.energy_resets == 1


def test_energy_counter_wrap_counts_across_2_64() -> None:
    top = 2**64 - 1_000
    sampler, fake, clock = started(1, energy_mj=top)
    [sample] = run_interval(sampler, clock, fake, [{0: {"energy_mj": 4_000}}])
    assert sample.energy_joules == pytest.approx(5.0)
    assert sampler.stats.energy_wraps == 1 and sampler.stats.energy_resets == 0


def test_missed_intervals_attribute_only_the_in_interval_share() -> None:
    meter = EnergyMeter()
    meter.observe(0, 100.0, interval_start=95.0)
    # next reading 30 s later (collector stalled), interval started 5 s before it: 5/30 of 3000 J belongs here
    step = meter.observe(3_000_000, 130.0, interval_start=125.0)
    assert step.joules == pytest.approx(500.0)
    assert step.unattributed_joules == pytest.approx(2500.0)
    assert meter.observe(3_000_000, 130.0, interval_start=125.0).joules == 0.0  # no time passed, nothing


def test_per_process_utilization_and_process_union() -> None:
    sampler, fake, clock = started(1, processes={100: 2**30})
    us = int(T0 * 1e6)
    fake.devices[0].process_samples.extend([(100, us + 400_000, 30), (100, us + 1_400_000, 50), (200, us + 1_500_000, 10)])
    [sample] = run_interval(sampler, clock, fake, [{0: {"processes": {100: 3 * 2**30, 200: 2**29}}}, {0: {"processes": {200: 2**29}}}])
    procs = {p.pid: p for p in sample.processes}
    assert procs[100].gpu_memory_bytes == 3 * 2**30  # max seen, though it exited before the interval end
    assert procs[100].sm_utilization_pct == pytest.approx(40.0)
    assert procs[200].sm_utilization_pct == pytest.approx(10.0)


def test_xid_and_ecc_are_per_interval_counts() -> None:
    sampler, fake, clock = started(1, ecc_corrected=7)
    run_interval(sampler, clock, fake, [{}])
    fake.devices[0].xids.extend([79, 48])
    [sample] = run_interval(sampler, clock, fake, [{0: {"ecc_corrected": 10, "ecc_uncorrected": 1}}])
    assert (sample.xid_errors, sample.ecc_errors_corrected, sample.ecc_errors_uncorrected) == (2, 3, 1)


def test_mig_instances_are_entities_with_their_share_of_power() -> None:
    clock = Clock()
    parent = DeviceState(uuid="GPU-parent", memory_total=80 * 2**30, power_mw=400_000)
    parent.mig = [
        DeviceState(
            uuid=f"MIG-{k}",
            memory_total=size * 2**30,
            gi=k + 1,
            ci=0,
            parent=parent,
            unsupported={"nvmlDeviceGetUtilizationRates", "nvmlDeviceGetSamples"},
            processes={900 + k: 2**30},
        )
        for k, size in enumerate([40, 20])
    ]
    fake = FakeNvml([parent], clock=clock)
    sampler = NvmlSampler(fake, "node-m", clock=clock)
    sampler.start()
    a, b = run_interval(sampler, clock, fake, [{0: {"energy_mj": 8_000_000}}])
    assert (a.gpu_uuid, b.gpu_uuid) == ("MIG-0", "MIG-1")
    assert a.mig_instance == "GPU-parent/gi1/ci0" and a.sample_id.startswith("node-m/MIG-0/")
    assert a.power_watts == pytest.approx(200.0) and b.power_watts == pytest.approx(100.0)
    assert a.energy_joules == pytest.approx(4000.0) and b.energy_joules == pytest.approx(2000.0)
    assert a.energy_counter_mj is None
    assert [p.pid for p in b.processes] == [901]
    parent.lost = True
    assert run_interval(sampler, clock, fake, [{}]) == []
    assert sampler.stats.gpus_lost == 2


def mig_a100(profiles: list[str], **parent_fields: object) -> tuple[NvmlSampler, FakeNvml, Clock, DeviceState]:
    clock = Clock()
    parent = DeviceState(uuid="GPU-a100", name="NVIDIA A100-SXM4-80GB", memory_total=80 * 2**30, **parent_fields)  # type: ignore[arg-type]
    split_mig(parent, profiles)
    fake = FakeNvml([parent], clock=clock)
    sampler = NvmlSampler(fake, "node-m", clock=clock)
    sampler.start()
    return sampler, fake, clock, parent


def test_mig_profile_and_slices_of_an_a100_split_3_2_1() -> None:
    """3g.40gb + 2g.20gb + 1g.10gb on a 7-slice A100 80GB: 6 slices used, one free."""
    sampler, fake, clock, parent = mig_a100(["3g.40gb", "2g.20gb", "1g.10gb"])
    samples = run_interval(sampler, clock, fake, [{}])
    got = [(s.gpu_uuid, s.gpu_model, s.mig_parent_uuid, s.mig_profile, s.mig_slices, s.mig_parent_slices) for s in samples]
    assert got == [
        ("MIG-a100-0", "NVIDIA A100-SXM4-80GB", "GPU-a100", "3g.40gb", 3, 7),
        ("MIG-a100-1", "NVIDIA A100-SXM4-80GB", "GPU-a100", "2g.20gb", 2, 7),
        ("MIG-a100-2", "NVIDIA A100-SXM4-80GB", "GPU-a100", "1g.10gb", 1, 7),
    ]
    assert sum(s.mig_slices for s in samples) == 6  # the seventh slice has no instance: the worker books it idle
    assert [s.mig_instance for s in samples] == ["GPU-a100/gi1/ci0", "GPU-a100/gi2/ci0", "GPU-a100/gi3/ci0"]
    assert all(s.utilization_pct == 0.0 for s in samples)  # NVML has no utilization for MIG devices: NotSupported, not an error
    assert sum(sampler.stats.nvml_errors.values()) == 0


def test_whole_gpus_carry_no_mig_fields() -> None:
    sampler, fake, clock = started(1)
    [s] = run_interval(sampler, clock, fake, [{}])
    assert (s.mig_instance, s.mig_parent_uuid, s.mig_profile, s.mig_slices, s.mig_parent_slices) == (None, None, None, 0, 0)


def test_mig_compute_instance_smaller_than_its_gpu_instance_and_a_4_slice_gpu() -> None:
    a30 = {
        pynvml.NVML_GPU_INSTANCE_PROFILE_1_SLICE: 1,
        pynvml.NVML_GPU_INSTANCE_PROFILE_2_SLICE: 2,
        pynvml.NVML_GPU_INSTANCE_PROFILE_4_SLICE: 4,
    }
    clock = Clock()
    parent = DeviceState(uuid="GPU-a30", name="NVIDIA A30", memory_total=24 * 2**30, gi_profiles=a30)
    split_mig(parent, ["2g.12gb", "1c.2g.12gb"])
    sampler = NvmlSampler(FakeNvml([parent], clock=clock), "n", clock=clock)
    sampler.start()
    assert [(e.mig_profile, e.mig_slices, e.mig_parent_slices) for e in sampler.entities] == [("2g.12gb", 2, 4), ("1c.2g.12gb", 1, 4)]


def test_mig_fields_degrade_to_unknown_when_the_driver_cannot_tell() -> None:
    """Old drivers: no attributes (profile None, slices 0), no versioned profile call (falls back to v1)."""
    sampler, fake, clock, parent = mig_a100(["4g.40gb"])
    assert [(e.mig_profile, e.mig_slices, e.mig_parent_slices) for e in sampler.entities] == [("4g.40gb", 4, 7)]

    class OldDriver(FakeNvml):
        def nvmlDeviceGetGpuInstanceProfileInfo(self, handle: Handle, profile: int, version: int = 2) -> object:
            if version == 2:
                raise pynvml.NVMLError_FunctionNotFound()
            info = super().nvmlDeviceGetGpuInstanceProfileInfo(handle, profile, version)
            assert isinstance(info, pynvml.c_nvmlGpuInstanceProfileInfo_t)
            return info

    for m in parent.mig:
        m.unsupported.add("nvmlDeviceGetAttributes")
    old = NvmlSampler(OldDriver([parent], clock=clock), "n", clock=clock)
    with capture_logs() as logs:
        old.start()
    assert [(e.mig_profile, e.mig_slices, e.mig_parent_slices) for e in old.entities] == [(None, 0, 7)]
    assert any("nvmlDeviceGetAttributes" in e["event"] for e in logs)
    parent.gi_profiles = {}
    with capture_logs() as logs:
        assert [e.mig_parent_slices for e in NvmlSampler(FakeNvml([parent], clock=clock), "n", clock=clock).start()] == [0]
    assert any("slice count unreadable" in e["event"] for e in logs)


@pytest.mark.parametrize(
    ("memory_mb", "parent_mib", "gb"),
    [
        (40192, 81920, 40),
        (19968, 81920, 20),
        (9856, 81920, 10),
        (80896, 81920, 80),  # A100 / H100 80GB
        (4864, 40960, 5),
        (9984, 40960, 10),
        (19968, 40960, 20),
        (40192, 40960, 40),  # A100 40GB
        (5836, 24576, 6),
        (11968, 24576, 12),
        (24064, 24576, 24),  # A30
        (16384, 143771, 18),
        (70448, 143771, 71),  # H200 141GB: 1g.18gb, 3g.71gb
    ],
)
def test_profile_memory_is_named_as_nvidia_names_it(memory_mb: int, parent_mib: int, gb: int) -> None:
    assert mig_memory_gb(memory_mb, parent_mib * 2**20) == gb


def test_bad_mig_layouts_are_refused_with_the_reason() -> None:
    parent = DeviceState(uuid="GPU-x", name="NVIDIA A100-SXM4-80GB")
    with pytest.raises(ValueError, match="needs 8 slices; NVIDIA A100-SXM4-80GB has 7"):
        split_mig(parent, ["4g.40gb", "4g.40gb"])
    with pytest.raises(ValueError, match="'5g.50gb' does not exist"):
        split_mig(parent, ["5g.50gb"])
    with pytest.raises(ValueError, match="expected '<slices>g.<GB>gb'"):
        split_mig(parent, ["3g"])


def test_no_driver_error_names_the_library_and_the_simulated_source() -> None:
    with pytest.raises(NvmlUnavailable) as err:
        init_nvml(pynvml)  # the real pynvml: this machine has no libnvidia-ml.so.1
    assert "libnvidia-ml.so.1" in str(err.value) and "--source simulated" in str(err.value)

    class NoDriver:
        def nvmlInit(self) -> None:
            raise pynvml.NVMLError_DriverNotLoaded()

    with pytest.raises(NvmlUnavailable, match="DriverNotLoaded.*--source simulated"):
        init_nvml(NoDriver())


def test_simulator_is_seeded_and_physically_plausible() -> None:
    def trace(seed: int) -> list[tuple[str, float, float, float]]:
        clock = Clock()
        sim = SimulatedNvml(4, seed=seed, node="n", clock=clock)
        sampler = NvmlSampler(sim, "n", clock=clock)
        sampler.start()
        out = []
        for _ in range(60):
            sampler.begin(clock())
            for _ in range(5):
                clock.tick(1.0)
                sampler.poll()
            out += [(s.gpu_uuid, s.utilization_pct, s.power_watts, s.energy_joules) for s in sampler.finish(clock())]
        return out

    a, b = trace(1), trace(1)
    assert a == b and a != trace(2)
    utils = [u for _, u, _, _ in a]
    assert min(utils) == 0.0 and max(utils) > 50.0  # idle gaps and busy phases both occur
    for _, util, watts, joules in a[8:]:  # after the first intervals every step has a baseline
        assert 0.0 <= util <= 100.0
        assert joules == pytest.approx(watts * 5.0, rel=0.25)  # energy agrees with average power x 5 s


def test_rediscovery_picks_up_a_gpu_that_comes_back_and_counts_a_lost_one_once() -> None:
    sampler, fake, clock = started(2)
    fake.devices[1].lost = True
    run_interval(sampler, clock, fake, [{}])
    assert sampler.stats.gpus_lost == 1 and len(sampler.entities) == 1
    assert sampler.rediscover() == [] and sampler.rediscover() == []
    assert sampler.stats.gpus_lost == 1  # counted when dropped, not again at every rediscovery
    fake.devices[1].lost = False  # GPU reset brought it back
    [back] = sampler.rediscover()
    assert back.uuid == "GPU-0001-aaaa"
    samples = run_interval(sampler, clock, fake, [{1: {"util_gpu": 70}}])
    assert [s.gpu_uuid for s in samples] == ["GPU-0000-aaaa", "GPU-0001-aaaa"]
    assert samples[1].utilization_pct == pytest.approx(35.0)  # mean of the polls 0 and 70


def test_simulated_samples_for_the_fleet_simulator() -> None:
    from collectors.simnvml import simulated_samples

    samples = simulated_samples("gpu-node-z", 2, T0, 12, interval_seconds=5.0)
    assert samples == simulated_samples("gpu-node-z", 2, T0, 12, interval_seconds=5.0)
    assert len(samples) == 24
    assert samples[0].interval_start == datetime.fromtimestamp(T0, UTC)
    assert samples[-1].interval_end == datetime.fromtimestamp(T0 + 60, UTC)
    assert len({s.sample_id for s in samples}) == 24 and all(s.node == "gpu-node-z" for s in samples)
    assert all(s.energy_joules == pytest.approx(s.power_watts * 5.0, rel=0.25) for s in samples)


def test_simulated_mig_node_reports_profiles_and_instance_workloads() -> None:
    from collectors.simnvml import simulated_samples

    layout = {0: ["3g.40gb", "2g.20gb", "1g.10gb"]}
    samples = simulated_samples("mig-node", 2, T0, 60, interval_seconds=5.0, seed=1, mig=layout)
    assert samples == simulated_samples("mig-node", 2, T0, 60, interval_seconds=5.0, seed=1, mig=layout)
    first = samples[:4]
    assert [(s.mig_profile, s.mig_slices, s.mig_parent_slices) for s in first] == [
        ("3g.40gb", 3, 7),
        ("2g.20gb", 2, 7),
        ("1g.10gb", 1, 7),
        (None, 0, 0),
    ]
    parent = first[3].gpu_uuid
    assert first[0].gpu_model == "NVIDIA A100-SXM4-80GB" and {s.mig_parent_uuid for s in first[:3]} == {first[0].mig_instance.split("/")[0]}
    assert parent != first[0].mig_parent_uuid  # GPU 1 is whole; GPU 0 is only seen through its instances
    mig = [s for s in samples if s.mig_profile]
    assert any(s.processes for s in mig) and any(not s.processes for s in mig)  # instances run and idle on their own
    assert all(s.utilization_pct == 0.0 for s in mig)  # as on real MIG: NVML has no utilization for them
    assert all(s.energy_joules > 0 for s in mig)


def test_simulated_mig_layout_errors_say_what_to_change() -> None:
    with pytest.raises(ValueError, match="NVIDIA L40S .* has no MIG"):
        SimulatedNvml(1, seed=2, node="mig-node", mig={0: ["1g.10gb"]})
    with pytest.raises(ValueError, match="has GPUs 0..0"):
        SimulatedNvml(1, seed=1, node="mig-node", mig={3: ["1g.10gb"]})
