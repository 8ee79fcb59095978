"""Live homework monitor: schemas, pure windowing/aggregation core, Faust worker and CLI."""
