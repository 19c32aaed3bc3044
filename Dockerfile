# Tally, one image for every role (`tally serve|ingest|process|api|replay`).
# Not built on the development machine (it has no Docker engine): see deploy/README.md.
FROM rust:1.86-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin tally

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* && useradd --system --home /var/lib/tally tally \
    && mkdir -p /var/lib/tally && chown tally /var/lib/tally
COPY --from=build /src/target/release/tally /usr/local/bin/tally
USER tally
WORKDIR /var/lib/tally
ENV TALLY_DATA_DIR=/var/lib/tally TALLY_LISTEN=0.0.0.0:3000
EXPOSE 3000
HEALTHCHECK CMD curl -fsS http://127.0.0.1:3000/api/health || exit 1
ENTRYPOINT ["tally"]
CMD ["serve"]
