"""Moving a legacy consumer to a JetStream durable consumer that starts exactly where it stopped
(issue 16): where a legacy position is in a stream (`search`), and the handoff itself."""
