"""gantry.network: container networking through CNI plugins (layer 4).

The engine uses :class:`NetworkManager` (networks, attachments, recovery); the pieces
below it are usable alone: :mod:`~gantry.network.cni` runs plugins by the CNI spec,
:mod:`~gantry.network.ports` parses ``-p`` values, :mod:`~gantry.network.names` renders
``/etc/hosts`` and ``/etc/resolv.conf``, :mod:`~gantry.network.netns` pins namespaces and
:mod:`~gantry.network.firewall` keeps networks apart. See docs/network.md.
"""

from gantry.network.cni import CNI, NetworkConfigList, RuntimeConf, load_config_dirs
from gantry.network.errors import (
    CNIError,
    InvalidNetworkInput,
    NetworkError,
    NetworkExists,
    NetworkInUse,
    NetworkNotFound,
)
from gantry.network.manager import (
    Attachment,
    AttachRequest,
    Endpoint,
    EndpointRequest,
    NetworkConfig,
    NetworkInfo,
    NetworkManager,
    RecoveryReport,
)
from gantry.network.networks import Network, NetworkSpec
from gantry.network.ports import PortMapping, parse_port, parse_ports

__all__ = [
    "CNI",
    "AttachRequest",
    "Attachment",
    "CNIError",
    "Endpoint",
    "EndpointRequest",
    "InvalidNetworkInput",
    "Network",
    "NetworkConfig",
    "NetworkConfigList",
    "NetworkError",
    "NetworkExists",
    "NetworkInUse",
    "NetworkInfo",
    "NetworkManager",
    "NetworkNotFound",
    "NetworkSpec",
    "PortMapping",
    "RecoveryReport",
    "RuntimeConf",
    "load_config_dirs",
    "parse_port",
    "parse_ports",
]
