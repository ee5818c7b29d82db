"""The generic hypervisor interface and its implementations."""
