"""CompileConfig's room rule: the levels a target T may be calibrated for leave the neurons a
burst cap of at least CATCH_UP_ROOM times the bursts their thresholds are chosen for."""

from hypothesis import given
from hypothesis import strategies as st

from snncompiler.context import CATCH_UP_ROOM, CompileConfig


@given(timesteps=st.integers(1, 256), resolution=st.integers(1, 4096),
       cap=st.integers(1, 1024))
def test_room_means_a_cap_of_at_least_catch_up_room_bursts(timesteps, resolution, cap):
    config = CompileConfig(max_spikes_per_step=cap)
    burst = config.levels_per_step(timesteps, resolution)
    if config.has_room(timesteps, resolution):
        assert cap >= CATCH_UP_ROOM * burst
        assert burst == -(-resolution // timesteps)  # never clipped by the cap
    else:
        assert CATCH_UP_ROOM * -(-resolution // timesteps) > cap


def test_the_default_gives_each_t_the_levels_of_bursts_of_a_quarter_of_the_cap():
    # A cap of 1024: from T=4 on, every candidate up to 1024 levels has room.
    config = CompileConfig()
    allowed = {t: max(r for r in config.resolutions if config.has_room(t, r))
               for t in (1, 2, 4, 8, 16, 32, 64)}
    assert allowed == {1: 256, 2: 512, 4: 1024, 8: 1024, 16: 1024, 32: 1024, 64: 1024}
