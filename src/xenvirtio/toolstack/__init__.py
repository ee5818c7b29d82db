"""xl-style toolstack: xl.cfg domain configs, and (built on the runtime) domain lifecycle.

cfg = load_domain_config("examples/demo.cfg")      # ConfigError "FILE:LINE: key: ..."
specs = runtime_specs(cfg).specs                   # frozen runtime device specs
"""
