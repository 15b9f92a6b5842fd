"""Message queues: AWS SQS through boto3, and a local queue with the same semantics."""
