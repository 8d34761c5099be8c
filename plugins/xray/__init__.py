"""The paper's three x-ray datasets, as researchers download them, and a researcher's own folder."""

from lmbench.api import hookimpl


@hookimpl
def lmbench_register_datasets(register):
    register("isbi2015", "lmbench_plugins.xray.isbi2015:Isbi2015")
    register("hand", "lmbench_plugins.xray.hand:DigitalHandAtlas")
    register("chest", "lmbench_plugins.xray.chest:ShenzhenChest")
    register("folder", "lmbench_plugins.xray.folder:FolderDataset")
