# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Makes the collection's filters usable without the FQCN from a checkout (ansible.cfg's
filter_plugins). The code lives once, in plugins/filter/pg.py."""

from ansible_collections.zerodowntime.migration.plugins.filter.pg import FilterModule

__all__ = ["FilterModule"]
