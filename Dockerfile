# syntax=docker/dockerfile:1
#
# cachegate: a caching reverse proxy in front of the unchanged task API.
#   docker build -t cachegate .
#   docker run --rm -p 8080:8080 -e REDIS_URL=redis://redis:6379 \
#       -e CACHEGATE_BACKEND=http://backend:8000 cachegate

# ---- build ------------------------------------------------------------------
# Base images pinned by digest (of the tags shown, taken 2026-12 from public
# projects pinning them, without registry access to re-check; refresh and
# check with `docker buildx imagetools inspect rust:1-bookworm`, its
# "Digest:" line, and likewise debian:bookworm-slim below).
FROM rust:1-bookworm@sha256:93ce27a88655056a51dbdd8f5f2d7ddc071c7b0070fb288a37b5a285fc83971e AS builder
WORKDIR /src

# Dependencies first, against a dummy crate, so that this (slow) layer is
# reused for as long as Cargo.toml and Cargo.lock do not change.
COPY Cargo.toml Cargo.lock build.rs ./
RUN mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src

# The commit cachegate_build_info reports: the build context has no .git, so
# pass it (`docker build --build-arg CACHEGATE_COMMIT=$(git rev-parse --short
# HEAD) .`); without it the commit label reads "unknown".
ARG CACHEGATE_COMMIT=unknown
ENV CACHEGATE_COMMIT=$CACHEGATE_COMMIT

# The real sources. COPY keeps the files' timestamps, which may be older than
# the dummy build's: touch them so cargo rebuilds the crate itself.
COPY src ./src
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked \
    && cp target/release/cachegate /usr/local/bin/cachegate

# ---- runtime ----------------------------------------------------------------
FROM debian:bookworm-slim@sha256:7b140f374b289a7c2befc338f42ebe6441b7ea838a042bbd5acbfca6ec875818
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 cachegate \
    && useradd --system --uid 10001 --gid cachegate --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin cachegate

COPY --from=builder /usr/local/bin/cachegate /usr/local/bin/cachegate
# The documented default config; docker-compose.yml mounts the project's
# proxy.toml over it (read-only).
COPY proxy.toml /etc/cachegate/proxy.toml

USER cachegate:cachegate
# 8080: the proxy; 9091: the admin API, /metrics and health when
# CACHEGATE_ADMIN_LISTEN (or [admin] listen) puts them there, as compose does.
EXPOSE 8080 9091
ENTRYPOINT ["cachegate"]
CMD ["--config", "/etc/cachegate/proxy.toml"]
