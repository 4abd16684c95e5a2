// A Benthos v4.27.0 binary with only the components bench/peers.py uses:
// kafka_franz (kafka), amqp_0_9 (amqp09), nats_jetstream (nats), pure processors and io.
package main

import (
	"context"

	_ "github.com/benthosdev/benthos/v4/public/components/amqp09"
	_ "github.com/benthosdev/benthos/v4/public/components/io"
	_ "github.com/benthosdev/benthos/v4/public/components/kafka"
	_ "github.com/benthosdev/benthos/v4/public/components/nats"
	_ "github.com/benthosdev/benthos/v4/public/components/pure"
	"github.com/benthosdev/benthos/v4/public/service"
)

func main() {
	service.RunCLI(context.Background())
}
