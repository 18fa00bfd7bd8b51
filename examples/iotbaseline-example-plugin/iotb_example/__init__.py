"""An example iotbaseline probe plugin, kept small enough to copy as a starting point."""

from importlib.resources import files

# Registered under the ``iotbaseline.frameworks`` entry-point group: iotbaseline merges the
# clauses named there into its frameworks, so this plugin's findings carry clause ids in every
# report format without any edit to iotbaseline itself.
FRAMEWORK_MAPPINGS = files(__name__) / "frameworks.yaml"
