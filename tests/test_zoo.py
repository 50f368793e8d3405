"""The named recipes share cache keys with the paper-table rows that mean the same model."""
import pytest

from cifs_edu import zoo
from cifs_edu.experiments import table_configs
from cifs_edu.profiles import ConfigError


@pytest.mark.parametrize("profile", ["smoke", "laptop", "paper"])
def test_recipes_match_table_rows(profile):
    t1 = table_configs("table1_cifar10_resnet18_last", profile)
    assert zoo.config("vanilla_at", profile).key() == t1["vanilla"].key()
    assert zoo.config("cifs_at", profile).key() == t1["cifs"].key()
    assert zoo.config("cas_at", profile).key() == t1["cas"].key()


def test_overrides_merge_and_errors():
    cfg = zoo.config("cifs_sigmoid", "smoke", model_options={"k": 3}, beta=0.1)
    assert cfg.model_options == {"imgf": "sigmoid", "alpha": 10.0, "k": 3} and cfg.beta == 0.1
    assert zoo.config("standard", "smoke").method == "standard"
    with pytest.raises(ConfigError, match="unknown model recipe"):
        zoo.config("resnet1000", "smoke")
    assert all(zoo.describe(n) for n in zoo.RECIPES)
