# The service's container image, in two stages:
#   build    the official Rust image compiles the release binary with the committed Cargo.lock
#            (--locked); BuildKit cache mounts keep the registry and target/ between builds;
#   runtime  distroless (glibc, CA certificates, no shell, no package manager), as uid 65532.
# Build: `docker build -t service .` (BuildKit, the default builder of Docker 23+).
#
# Two build arguments let a build use other images than these, for example ones already on the
# machine: BINARY_FROM names an image that holds the binary at /service (the build stage
# is then skipped), RUNTIME_BASE the image to run it on.
ARG RUST_VERSION=1.88
ARG RUNTIME_BASE=gcr.io/distroless/cc-debian12:nonroot
ARG BINARY_FROM=build

FROM rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p service \
    && cp target/release/service /service

FROM ${BINARY_FROM} AS binary

FROM ${RUNTIME_BASE}
COPY --from=binary /service /usr/local/bin/service
# Non-root, as distroless's `nonroot` user; Kubernetes checks it with runAsNonRoot.
USER 65532:65532
# In a container both listeners face the network; the log goes out as JSON. The HTTP front
# (8080) is on where SERVICE_HTTP_LISTEN=0.0.0.0:8080 is set, as the Deployment does.
ENV SERVICE_LISTEN=0.0.0.0:7878 \
    SERVICE_ADMIN_LISTEN=0.0.0.0:7879 \
    SERVICE_LOG_FORMAT=json
EXPOSE 7878 8080 7879
# What `docker stop` and Kubernetes send; the service drains on it and exits 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/service", "serve"]
