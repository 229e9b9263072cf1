# Multi-stage build: a release binary built in the Rust image, run from a minimal
# Debian image as a non-root user. The config is mounted at /etc/ecslb/:
#   docker build -t ecslb .
#   docker run -p 8080:8080 -v "$PWD/config:/etc/ecslb:ro" ecslb
FROM rust:1-bookworm AS build
WORKDIR /src
# Dependencies first, so source edits do not rebuild them.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches \
    && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && echo 'fn main() {}' > benches/routing.rs && cp benches/routing.rs benches/balance.rs \
    && cargo build --release --locked \
    && rm -rf src benches
COPY src ./src
COPY benches ./benches
RUN touch src/main.rs src/lib.rs && cargo build --release --locked && strip target/release/ecslb

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home ecslb \
    && mkdir -p /etc/ecslb
COPY --from=build /src/target/release/ecslb /usr/local/bin/ecslb
USER ecslb
EXPOSE 8080 9901
ENTRYPOINT ["/usr/local/bin/ecslb"]
CMD ["run", "-c", "/etc/ecslb/ecslb.toml", "--log-format", "json"]
