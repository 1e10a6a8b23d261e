# The dask-gateway-server config file of a clusterhub platform: all settings come from
# clusterhub.gateway.config and the platform settings named by $CLUSTERHUB_SETTINGS. An
# organiser's own config file (clusterhub up --config FILE) is loaded last, here as in the
# hub: its sections for the gateway's classes (c.LocalSpaceBackend...) apply here, and
# the hub's sections are ignored.
from clusterhub.gateway.config import configure_gateway
from clusterhub.settings import PlatformSettings

c = get_config()  # noqa: F821 (provided by traitlets when it loads this file)
settings = PlatformSettings.load()
configure_gateway(c, settings)
if settings.extra_config_file:
    load_subconfig(settings.extra_config_file)  # noqa: F821
