"""The one registry type: parts by name, a decorator to add one, and config errors that name the key."""

import pytest

from dr_fdsl.errors import ConfigError
from dr_fdsl.registry import Registry


def test_register_get_and_mapping_behaviour():
    parts = Registry("family", "bank.family")
    parts.register("ifs3d", 1)

    @parts.register("svd2d")
    def svd2d():
        return 2

    assert parts.get("ifs3d") == 1 and parts["svd2d"] is svd2d and svd2d() == 2
    assert "ifs3d" in parts and "x" not in parts and len(parts) == 2 and parts.names() == ["ifs3d", "svd2d"]
    assert dict(parts) == {"ifs3d": 1, "svd2d": svd2d}


def test_unknown_name_names_the_key_the_choices_and_the_closest():
    parts = Registry("family", "bank.family")
    parts.register("ifs3d", 1)
    parts.register("svd2d", 2)
    with pytest.raises(ConfigError, match=r"^config key 'bank.family': unknown family 'ifs3' "
                                          r"\(did you mean 'ifs3d'\?\); valid: ifs3d, svd2d$"):
        parts.get("ifs3")
    with pytest.raises(ConfigError, match=r"unknown family 'zzz'; valid"):
        parts.get("zzz")


def test_a_name_registered_twice_is_refused():
    parts = Registry("objective", "train.objective")
    parts.register("classify", 1)
    with pytest.raises(ValueError, match="registered twice"):
        parts.register("classify", 2)
