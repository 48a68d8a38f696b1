"""Model plumbing shared by every probe and method: resolving and loading checkpoints (`models`, `gguf`,
`packaged_models`, `strict_loading`), device/dtype/batch planning (`runtime`, `batching`), batched
generation (`generation`), log-likelihood scoring (`loglik`, `loglik_batches`) and chat templates."""
