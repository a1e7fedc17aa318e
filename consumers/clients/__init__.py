"""The Kafka clients behind one small interface (base): librdkafka's, and an in-memory twin."""
