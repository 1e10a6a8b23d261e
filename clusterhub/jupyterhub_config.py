# The JupyterHub config file of a clusterhub platform. Everything is set by
# clusterhub.hubconfig from the settings file named by $CLUSTERHUB_SETTINGS; an
# organiser's own config file (clusterhub up --config FILE) is loaded last.
from clusterhub.hubconfig import configure_hub
from clusterhub.settings import PlatformSettings

c = get_config()  # noqa: F821 (provided by traitlets when it loads this file)
settings = PlatformSettings.load()
configure_hub(c, settings)
if settings.extra_config_file:
    load_subconfig(settings.extra_config_file)  # noqa: F821
