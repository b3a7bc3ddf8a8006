//! The network fault flags, named as lueur/fault names them.

use clap::Args;

/// Network fault flags, with lueur/fault's names.
#[derive(Debug, Args, Clone, Default)]
pub struct FaultArgs {
    /// Add latency.
    #[arg(long)]
    pub with_latency: bool,
    /// Apply latency on every read/write instead of once per request/connection.
    #[arg(long)]
    pub latency_per_read_write: bool,
    /// Leg the latency applies to (client|server).
    #[arg(long, value_name = "SIDE")]
    pub latency_side: Option<String>,
    /// Direction (ingress|egress|both).
    #[arg(long, value_name = "DIR")]
    pub latency_direction: Option<String>,
    /// Distribution (uniform|normal|pareto|pareto_normal).
    #[arg(long, value_name = "NAME")]
    pub latency_distribution: Option<String>,
    /// Mean latency (ms, or with a unit).
    #[arg(long, value_name = "MS")]
    pub latency_mean: Option<String>,
    /// Standard deviation (ms).
    #[arg(long, value_name = "MS")]
    pub latency_stddev: Option<String>,
    /// Pareto shape.
    #[arg(long, value_name = "X")]
    pub latency_shape: Option<f64>,
    /// Pareto scale.
    #[arg(long, value_name = "X")]
    pub latency_scale: Option<f64>,
    /// Uniform minimum (ms).
    #[arg(long, value_name = "MS")]
    pub latency_min: Option<String>,
    /// Uniform maximum (ms).
    #[arg(long, value_name = "MS")]
    pub latency_max: Option<String>,
    /// Probability the latency applies (0..1).
    #[arg(long, value_name = "P")]
    pub latency_probability: Option<f64>,
    /// When latency is active (start:…,duration:…).
    #[arg(long, value_name = "SPEC")]
    pub latency_sched: Option<String>,
    /// Only HTTP exchanges whose `METHOD PATH` matches (regex, case-insensitive).
    #[arg(long, value_name = "REGEX")]
    pub latency_match: Option<String>,

    /// Add jitter.
    #[arg(long)]
    pub with_jitter: bool,
    /// Leg (client|server).
    #[arg(long, value_name = "SIDE")]
    pub jitter_side: Option<String>,
    /// Direction (ingress|egress|both).
    #[arg(long, value_name = "DIR")]
    pub jitter_direction: Option<String>,
    /// Largest added delay (ms).
    #[arg(long, value_name = "MS")]
    pub jitter_amplitude: Option<String>,
    /// How often jitter applies, per second.
    #[arg(long, value_name = "HZ")]
    pub jitter_frequency: Option<f64>,
    /// Probability (0..1).
    #[arg(long, value_name = "P")]
    pub jitter_probability: Option<f64>,
    /// When jitter is active.
    #[arg(long, value_name = "SPEC")]
    pub jitter_sched: Option<String>,

    /// Limit bandwidth.
    #[arg(long)]
    pub with_bandwidth: bool,
    /// Leg (client|server).
    #[arg(long, value_name = "SIDE")]
    pub bandwidth_side: Option<String>,
    /// Direction (ingress|egress|both).
    #[arg(long, value_name = "DIR")]
    pub bandwidth_direction: Option<String>,
    /// Rate, in --bandwidth-unit per second.
    #[arg(long, value_name = "N")]
    pub bandwidth_rate: Option<f64>,
    /// Unit (Bps|KBps|MBps|GBps).
    #[arg(long, value_name = "UNIT")]
    pub bandwidth_unit: Option<String>,
    /// Probability (0..1).
    #[arg(long, value_name = "P")]
    pub bandwidth_probability: Option<f64>,
    /// When the limit is active.
    #[arg(long, value_name = "SPEC")]
    pub bandwidth_sched: Option<String>,

    /// Simulate packet loss (as TCP recovery delay; never corrupts the stream).
    #[arg(long)]
    pub with_packet_loss: bool,
    /// Leg (client|server).
    #[arg(long, value_name = "SIDE")]
    pub packet_loss_side: Option<String>,
    /// Direction (ingress|egress|both).
    #[arg(long, value_name = "DIR")]
    pub packet_loss_direction: Option<String>,
    /// Probability a read/write is "lost" (0..1).
    #[arg(long, value_name = "P")]
    pub packet_loss_probability: Option<f64>,
    /// When loss is active.
    #[arg(long, value_name = "SPEC")]
    pub packet_loss_sched: Option<String>,

    /// Accept connections but never forward.
    #[arg(long)]
    pub with_blackhole: bool,
    /// Leg (client|server).
    #[arg(long, value_name = "SIDE")]
    pub blackhole_side: Option<String>,
    /// Direction (ingress|egress|both).
    #[arg(long, value_name = "DIR")]
    pub blackhole_direction: Option<String>,
    /// Probability (0..1).
    #[arg(long, value_name = "P")]
    pub blackhole_probability: Option<f64>,
    /// When the blackhole is active.
    #[arg(long, value_name = "SPEC")]
    pub blackhole_sched: Option<String>,
    /// Only HTTP exchanges whose `METHOD PATH` matches (regex, case-insensitive).
    #[arg(long, value_name = "REGEX")]
    pub blackhole_match: Option<String>,

    /// Answer HTTP requests with an error.
    #[arg(long, visible_alias = "with-http-error")]
    pub with_http_response: bool,
    /// Status code of the error.
    #[arg(long, value_name = "CODE")]
    pub http_response_status: Option<u16>,
    /// Body of the error.
    #[arg(long, value_name = "TEXT")]
    pub http_response_body: Option<String>,
    /// Probability a request gets the error (0..1).
    #[arg(long, value_name = "P")]
    pub http_response_trigger_probability: Option<f64>,
    /// When the error is active.
    #[arg(long, value_name = "SPEC")]
    pub http_response_sched: Option<String>,
    /// Only requests whose `METHOD PATH` matches (regex, case-insensitive), e.g.
    /// '^POST /api/orders'.
    #[arg(long, value_name = "REGEX")]
    pub http_response_match: Option<String>,

    /// Answer matching PostgreSQL statements with an error (they never reach the server).
    #[arg(long)]
    pub with_sql_error: bool,
    /// SQLSTATE of the error (e.g. 40001).
    #[arg(long, value_name = "SQLSTATE")]
    pub sql_error_code: Option<String>,
    /// Message of the error.
    #[arg(long, value_name = "TEXT")]
    pub sql_error_message: Option<String>,
    /// Statements it applies to (regex over the SQL, case-insensitive).
    #[arg(long, value_name = "REGEX")]
    pub sql_error_match: Option<String>,
    /// Probability a matching statement fails (0..1).
    #[arg(long, value_name = "P")]
    pub sql_error_probability: Option<f64>,
    /// When the error is active.
    #[arg(long, value_name = "SPEC")]
    pub sql_error_sched: Option<String>,

    /// Delay matching PostgreSQL statements.
    #[arg(long)]
    pub with_sql_latency: bool,
    /// Statements it applies to (regex over the SQL, case-insensitive).
    #[arg(long, value_name = "REGEX")]
    pub sql_latency_match: Option<String>,
    /// Mean delay (ms).
    #[arg(long, value_name = "MS")]
    pub sql_latency_mean: Option<String>,
    /// Standard deviation (ms).
    #[arg(long, value_name = "MS")]
    pub sql_latency_stddev: Option<String>,
    /// Probability a matching statement is delayed (0..1).
    #[arg(long, value_name = "P")]
    pub sql_latency_probability: Option<f64>,
    /// When the delay is active.
    #[arg(long, value_name = "SPEC")]
    pub sql_latency_sched: Option<String>,

    /// Close the connection when a matching PostgreSQL statement arrives.
    #[arg(long)]
    pub with_sql_reset: bool,
    /// Statements it applies to (regex over the SQL, case-insensitive).
    #[arg(long, value_name = "REGEX")]
    pub sql_reset_match: Option<String>,
    /// Probability a matching statement resets the connection (0..1).
    #[arg(long, value_name = "P")]
    pub sql_reset_probability: Option<f64>,
    /// When the reset is active.
    #[arg(long, value_name = "SPEC")]
    pub sql_reset_sched: Option<String>,
}
