package projections

import (
	"os"
	"testing"

	"github.com/maestro-ml/maestro/internal/testpg"
)

func TestMain(m *testing.M) { os.Exit(testpg.Main(m)) }
