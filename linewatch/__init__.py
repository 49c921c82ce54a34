"""linewatch: streaming multimodal process monitoring for manufacturing lines."""

from linewatch.lifecycle import die_with_parent_if_asked

__version__ = "0.1.0"

# First thing in any linewatch process: a scoring child must not outlive its worker, even while importing.
die_with_parent_if_asked()
