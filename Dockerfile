# The stream-learner service image: `docker run IMAGE learn|serve|produce|models ...`
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY stream_learner ./stream_learner
COPY consumers ./consumers
RUN pip install --no-cache-dir . && useradd --system --uid 10001 learner
USER learner
ENTRYPOINT ["stream-learner"]
CMD ["--help"]
