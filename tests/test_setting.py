"""Setting: the one value a bank, generate(), the cost and a request share."""

import pytest

from ecad.bank import ScheduleBank
from ecad.paths import SCHEDULES_DIR
from ecad.setting import Setting


def test_setting_name_changes_and_dict_round_trip():
    s = Setting(32, 48, 20, 4)
    assert s.name == "32x48-20steps" and s.pixels == 32 * 48
    assert isinstance(s.guidance_scale, float) and s.guidance_scale == 4.0
    assert s.with_changes(height=64, num_inference_steps=None) == Setting(64, 48, 20, 4.0)
    assert Setting.from_dict(s.to_dict()) == s
    with pytest.raises(Exception):
        s.height = 1  # frozen: a setting that travels cannot change on the way


@pytest.mark.parametrize("field, value", [("height", 0), ("width", -8), ("num_inference_steps", 2.5),
                                          ("num_inference_steps", True)])
def test_setting_refuses_non_positive_or_non_integer_fields(field, value):
    fields = {"height": 32, "width": 32, "num_inference_steps": 20, "guidance_scale": 4.5, field: value}
    with pytest.raises(ValueError, match=f"Setting.{field} must be a positive integer"):
        Setting(**fields)


def test_bank_setting_is_its_flat_fields():
    bank = ScheduleBank.load(SCHEDULES_DIR / "ecad-scenes" / "32x32-20steps.json")
    assert bank.setting == Setting(bank.height, bank.width, bank.num_inference_steps, bank.guidance_scale)
    assert bank.setting == Setting(32, 32, 20, 4.5)
