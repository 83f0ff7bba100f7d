"""Batch scoring: a file dropped in blob storage gets a prediction or an error per row.

naming      job id (blob URL + ETag), blob paths of inputs, staging and outputs
formats     CSV / JSONL / Parquet, chosen by extension
planning    chunk plans: line-aligned byte ranges, whole Parquet row groups (pure)
messages    the chunk queue message (versioned, references only)
blobio      ranged reads as a file, block-staged writes as a file
ledger      the jobs table: chunk bitmaps, ETag-guarded transitions
reading     one chunk into columns, bad rows set aside with their reason
scoring     columns -> model inputs, batched runs, per-row fallback
staging     per-chunk parts, errors and manifests, same names on retry
outcome     whether a finished job succeeded (pure)
commit      staged parts -> predictions, errors.jsonl, summary.json, _SUCCESS
retry       the one table from errors to retry / fail-the-chunk
service     plan a job, score a chunk, record a poisoned chunk
"""
