"""A plugin that cannot be imported, like one whose dependency is missing."""

import tlkit_dependency_that_is_not_installed  # noqa: F401
