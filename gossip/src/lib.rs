//! SWIM membership for ringkv (filled in by the cluster issue).
