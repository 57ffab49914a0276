"""JetStream KV storage: typed buckets, watch-fed caches and the bucket layout."""
