"""``--topology`` parsing and the HBM table."""

import pytest

from jaxalign.planning.chips import GIB, hbm_bytes, parse_topology


def test_parse():
  t = parse_topology("v5e:4x4")
  assert (t.platform, t.chip, t.num_devices) == ("tpu", "v5e", 16)
  assert parse_topology("v5p:2x2x4").num_devices == 16
  assert parse_topology("cpu:8").num_devices == 8 and parse_topology("cpu").num_devices is None
  assert hbm_bytes(parse_topology("v5p:2x2x1")) == 95 * GIB
  assert hbm_bytes(parse_topology("v4:2x2x1")) == 32 * GIB
  assert hbm_bytes(parse_topology("cpu")) is None
  assert hbm_bytes(parse_topology("cpu"), 2.5) == int(2.5 * GIB)


@pytest.mark.parametrize("text", ["v5e", "v5e:4", "h100:8", "cpu:x", ""])
def test_bad(text):
  with pytest.raises(ValueError, match="--topology"):
    parse_topology(text)
