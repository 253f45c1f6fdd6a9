"""The suite's own ordering: `slow`-marked tests are collected first, the rest keep their order."""

from types import SimpleNamespace

from tests.conftest import slow_first


def _item(name: str, slow: bool):
    return SimpleNamespace(
        name=name, get_closest_marker=lambda marker: object() if slow and marker == "slow" else None
    )


def test_slow_tests_come_first_and_each_group_keeps_its_order():
    items = [_item("a", False), _item("b", True), _item("c", False), _item("d", True)]
    assert [item.name for item in slow_first(items)] == ["b", "d", "a", "c"]
