# The dask-gateway-server config file of a clusterhub platform: all settings come from
# clusterhub.gateway.config and the platform settings named by $CLUSTERHUB_SETTINGS.
from clusterhub.gateway.config import configure_gateway
from clusterhub.settings import PlatformSettings

c = get_config()  # noqa: F821 (provided by traitlets when it loads this file)
configure_gateway(c, PlatformSettings.load())
