"""The SignalBeam Edge device agent: store, metrics, engines, reconciler, sync, local API."""
