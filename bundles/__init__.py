"""The app bundle spec: data model, validation, versions and a canonical content hash."""
